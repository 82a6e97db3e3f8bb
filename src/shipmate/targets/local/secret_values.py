"""The secrets an environment's instances receive on the local target, from the encrypted store.

Called by the local runtime when it prepares a release and whenever the store's versions change (a
`shipmate secrets rotate` wakes it), and by `shipmate exec`. Every value lives sealed in the
control-plane store (`shipmate.secrets.store`); this module makes sure each used secret has a
current version there, then opens what is delivered. Where a first value comes from follows the spec:

- `from: {addon: X, key: url|password|username|host}`: the running addon's connection; stored
  again when the addon's connection changes (a new port, say);
- `generate:`: made once (`shipmate.secrets.generate`) and stored; a plaintext value that an older
  shipmate kept in `<env dir>/secrets/<name>` is moved into the store and its file removed;
- `set:` (a person) and `external:` (Vault, a cloud secret manager): whatever `shipmate secrets set`
  stored; with nothing stored the error says how to set it, or to give the environment a local source.

What an instance gets, per file mount `f` of a secret: `f` (the current value), `f.previous` while a
rotation's grace period runs, and one `.versions` file (JSON, `{"f": 3, "f.previous": 2}`) so that a
service, and the rotation drill, can tell which version it has loaded without seeing a value.

Only the secrets some workload uses are resolved. Values are bytes; this module never logs them or
puts one in an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shipmate.errors import SpecError, UserError
from shipmate.plan.models import Plan, Workload
from shipmate.secrets.generate import generate
from shipmate.secrets.store import SecretStore, Value
from shipmate.targets.local.addons import Connection

VERSIONS_FILE = ".versions"
PREVIOUS_SUFFIX = ".previous"


@dataclass(frozen=True)
class Delivered:
    """What is delivered of one secret: its current version, and the previous one during a grace period."""

    current: Value
    previous: Value | None = None

    @property
    def versions(self) -> tuple[int, int | None]:
        return (self.current.version, self.previous.version if self.previous is not None else None)


def used_secrets(plan: Plan) -> list[str]:
    """Names of the secrets at least one workload of the plan receives, sorted."""
    return sorted({m.secret for w in plan.workloads for m in w.secrets})


def ensure(plan: Plan, secrets: SecretStore, *, legacy_dir: Path, connections: Mapping[str, Connection]) -> None:
    """Give every used secret of the plan a current version in the store (see the module's doc)."""
    declared = {s.name: s for s in plan.secrets}
    env = plan.environment
    for name in used_secrets(plan):
        secret = declared.get(name)
        where = f"environments.{env}.overrides.secrets.{name}"
        if secret is None:
            raise SpecError(f"secret {name!r} is used but not declared", path=f"secrets.{name}")
        if secret.source == "from" and secret.from_addon is not None and secret.from_key is not None:
            if secret.from_addon not in connections:
                raise UserError(f"secret {name!r} comes from addon {secret.from_addon!r}, which does not run "
                                f"locally (external); override the secret in environment {env} "
                                f"({where}), e.g. with set or generate")
            value = connections[secret.from_addon].value(secret.from_key).encode()
            if not secrets.has(env, name) or secrets.current(env, name, detail="compare with the addon").value != value:
                secrets.put(env, name, value, detail=f"from addon {secret.from_addon}")
        elif secrets.has(env, name):
            continue
        elif secret.source == "generate" and secret.generate_type is not None:
            legacy = legacy_dir / name
            if legacy.is_file():
                secrets.put(env, name, legacy.read_bytes(), detail="moved from a plaintext file into the store")
                legacy.unlink()
            else:
                secrets.put(env, name, generate(secret.generate_type, secret.generate_length or 32),
                            detail=f"generated ({secret.generate_type})")
        elif secret.source == "set":
            raise UserError(f"secret {name!r} is set by a person and has no value in environment {env} yet; "
                            f"set it with `shipmate secrets set {name} --env {env}` (the value is read from stdin)")
        else:
            raise SpecError(f"secret {name!r} is external ({secret.external_provider}): the local target cannot "
                            f"fetch it; store a value with `shipmate secrets set {name} --env {env}`, or give "
                            f"environment {env} a local source, e.g. {where}: "
                            "{external: null, generate: {type: hex}}", path=f"secrets.{name}")


def load(plan: Plan, secrets: SecretStore, names: list[str] | None = None) -> dict[str, Delivered]:
    """Open what is delivered now of the plan's used secrets (or of `names`)."""
    env = plan.environment
    return {name: Delivered(secrets.current(env, name, detail="deliver"), secrets.previous(env, name, detail="deliver"))
            for name in (used_secrets(plan) if names is None else names)}


def values_of(delivered: Mapping[str, Delivered]) -> dict[str, bytes]:
    """name -> current value."""
    return {name: d.current.value for name, d in delivered.items()}


def file_set(workload: Workload, delivered: Mapping[str, Delivered]) -> dict[str, bytes]:
    """The whole set of files in an instance's secrets directory: every file mount's current value,
    its `.previous` during a grace period, and the `.versions` index."""
    files: dict[str, bytes] = {}
    versions: dict[str, int] = {}
    for mount in workload.file_secrets:
        one = delivered[mount.secret]
        files[mount.file] = one.current.value
        versions[mount.file] = one.current.version
        if one.previous is not None:
            files[mount.file + PREVIOUS_SUFFIX] = one.previous.value
            versions[mount.file + PREVIOUS_SUFFIX] = one.previous.version
    if files:
        files[VERSIONS_FILE] = (json.dumps(versions, sort_keys=True) + "\n").encode()
    return files
