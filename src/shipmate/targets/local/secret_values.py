"""The values of an environment's secrets on the local target.

Called by the local runtime when it starts instances and by `shipmate exec`. Where each value comes
from follows the spec:

- `from: {addon: X, key: url|password|username|host}`: the running addon's connection;
- `generate:`: made once (`shipmate.secrets.generate`) and kept in `<env dir>/secrets/<name>`,
  0600 in a 0700 directory, written atomically, so that every later start delivers the same value
  (the encrypted, versioned store replaces this directory when it lands);
- `set:` (a person sets it) and `external:` (Vault, a cloud secret manager) have no value a
  machine without those services can produce: an environment that runs locally overrides them,
  e.g. with `generate:`, and the error says so.

Only the secrets some workload uses are resolved. Values are bytes; this module never logs them or
puts one in an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shipmate.errors import SpecError, UserError
from shipmate.files import atomic_write
from shipmate.plan.models import Plan
from shipmate.secrets.generate import generate
from shipmate.targets.local.addons import Connection


def used_secrets(plan: Plan) -> list[str]:
    """Names of the secrets at least one workload of the plan receives, sorted."""
    return sorted({m.secret for w in plan.workloads for m in w.secrets})


def resolve(plan: Plan, *, directory: Path, connections: Mapping[str, Connection]) -> dict[str, bytes]:
    """name -> value of every used secret; `connections` holds the running addons' connections."""
    declared = {s.name: s for s in plan.secrets}
    values: dict[str, bytes] = {}
    for name in used_secrets(plan):
        secret = declared.get(name)
        where = f"environments.{plan.environment}.overrides.secrets.{name}"
        if secret is None:
            raise SpecError(f"secret {name!r} is used but not declared", path=f"secrets.{name}")
        if secret.source == "from" and secret.from_addon is not None and secret.from_key is not None:
            if secret.from_addon not in connections:
                raise UserError(f"secret {name!r} comes from addon {secret.from_addon!r}, which does not run "
                                f"locally (external); override the secret in environment {plan.environment} "
                                f"({where}), e.g. with set or generate")
            values[name] = connections[secret.from_addon].value(secret.from_key).encode()
        elif secret.source == "generate" and secret.generate_type is not None:
            values[name] = _generated(directory / name, secret.generate_type, secret.generate_length or 32)
        else:
            source = "is set by a person" if secret.source == "set" else \
                f"is external ({secret.external_provider})"
            raise SpecError(f"secret {name!r} {source}: the local target cannot fetch it; give environment "
                            f"{plan.environment} a local source, e.g. {where}: "
                            "{external: null, generate: {type: hex}}", path=f"secrets.{name}")
    return values


def _generated(path: Path, kind: str, length: int) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, generate(kind, length), mode=0o600)
    return path.read_bytes()
