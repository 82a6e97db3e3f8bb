"""From an environment's `keys:` to a key provider and a secret store.

Called by the `secrets` CLI commands, the local target (which delivers the stored values) and the
drills. The spec's `keys:` section (plan: `KeysPlan`) names the provider:

- `local` (default): a key file, `keys.path` relative to the spec's directory, else
  `$SHIPMATE_KEY_FILE`, else `<state dir>/keys/master.key`; created 0600 on first use;
- `vault`: a Transit key on the server at `keys.address` (else `$VAULT_ADDR`), with the token in
  `$VAULT_TOKEN` (never in the spec);
- `aws`: a KMS key, credentials and region from the usual AWS environment or `keys.region`.

The modules of the remote providers (and their client libraries) are imported only when used, so
that commands on the local provider start fast. Nothing here reads or logs a value.
"""

from __future__ import annotations

import os
from pathlib import Path

from shipmate.errors import UserError
from shipmate.plan.models import KeysPlan, Plan
from shipmate.secrets.keys import KeyProvider, LocalKeyProvider
from shipmate.secrets.store import SecretStore
from shipmate.store.db import Store

KEY_FILE_ENV = "SHIPMATE_KEY_FILE"


def local_key_path(keys: KeysPlan, *, state_dir: Path, base_dir: Path) -> Path:
    """Where the local key file of an environment is."""
    if keys.path:
        return (base_dir / os.path.expanduser(keys.path)).resolve()
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.path.expanduser(os.environ[KEY_FILE_ENV])).resolve()
    return state_dir / "keys" / "master.key"


def key_provider(keys: KeysPlan, *, state_dir: Path, base_dir: Path) -> KeyProvider:
    """The provider the `keys:` section names, ready to wrap and unwrap."""
    if keys.provider == "local":
        return LocalKeyProvider(local_key_path(keys, state_dir=state_dir, base_dir=base_dir))
    if keys.provider == "vault":
        from shipmate.secrets.vault import TransitKeyProvider

        address = keys.address or os.environ.get("VAULT_ADDR")
        token = os.environ.get("VAULT_TOKEN")
        if not address:
            raise UserError("keys.provider is vault but no server is named: set keys.address or $VAULT_ADDR")
        if not token:
            raise UserError("keys.provider is vault: put a token with the Transit key's encrypt and decrypt "
                            "rights in $VAULT_TOKEN")
        return TransitKeyProvider.connect(address, token, keys.key or "", mount=keys.mount)
    from shipmate.secrets.aws import KmsKeyProvider

    return KmsKeyProvider(keys.key or "", region=keys.region)


def secret_store(plan: Plan, store: Store, *, state_dir: Path, base_dir: Path, actor: str) -> SecretStore:
    """The secret store of the plan's application, sealed with the environment's key provider;
    every read and write is audited under `actor`."""
    provider = key_provider(plan.keys, state_dir=state_dir, base_dir=base_dir)
    return SecretStore(store, provider, app=plan.app, actor=actor)


def actor() -> str:
    """Who is acting, for the audit log: the login name and the host."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"
