"""A key provider backed by the Transit secrets engine of Vault or OpenBao (same API), through `hvac`.

Transit wraps each data key (`encrypt`), unwraps it (`decrypt`) and moves it to the key's newest
version without handing it out (`rewrap`); `rotate()` is Transit's own key rotation. The master key
never leaves the server.

How the associated data is bound: the Transit key must be a *derived* key (`derived=true`), and the
AAD goes in as the request's `context`, from which Transit derives a per-context key. A wrapped data
key therefore decrypts and rewraps under the same AAD only. We do not use Transit's
`associated_data` parameter: the `rewrap` endpoint does not take it (checked against OpenBao 2.7.2,
where rewrapping a ciphertext made with `associated_data` fails authentication), so keys bound that
way could not be rotated server-side. A non-derived key silently ignores `context`, which would
drop the binding, so the provider checks once, before its first use, that a value wrapped under
one context does not unwrap under another, and refuses the key otherwise. (Encrypting with a
context under a key name that does not exist yet makes Transit create it as a derived
`aes256-gcm96` key, if the token's policy allows it.)

The token needs `update` on `MOUNT/encrypt/KEY`, `MOUNT/decrypt/KEY` and `MOUNT/rewrap/KEY`, and on
`MOUNT/keys/KEY/rotate` for `rotate()`.

Called through the `KeyProvider` protocol by `shipmate.secrets` (and later the `secrets` CLI when
an environment chooses Vault). It must not log a data key or put one in an error; errors from the
server are truncated (`shipmate.errors.truncate`) and raised `from` hvac's own exception.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from shipmate.errors import ExternalError, UserError, truncate
from shipmate.secrets.crypto import Tampered, WrongKey

T = TypeVar("T")


class TransitKeyProvider:
    """Data keys wrapped by the Transit key `key` on the engine mounted at `mount`."""

    id = "vault-transit"

    def __init__(self, client: hvac.Client, key: str, *, mount: str = "transit") -> None:
        self.client = client
        self.key = key
        self.mount = mount
        self._checked = False

    @classmethod
    def connect(cls, url: str, token: str, key: str, *, mount: str = "transit", timeout: float = 10.0,
                verify: bool | str = True) -> TransitKeyProvider:
        """A provider talking to the server at `url` with `token` (`verify`: TLS check, or a CA file)."""
        return cls(hvac.Client(url=url, token=token, timeout=timeout, verify=verify), key, mount=mount)

    def __repr__(self) -> str:
        return f"TransitKeyProvider({self.client.url!r}, key={self.key_id!r})"

    @property
    def key_id(self) -> str:
        return f"{self.mount}/{self.key}"

    # --- the protocol ---------------------------------------------------------------------

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        self._check_derived()
        return self._encrypt(data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        self._version_of(wrapped)
        response = self._call("decrypt", lambda: self.client.secrets.transit.decrypt_data(
            self.key, ciphertext=self._text(wrapped), context=_b64(aad), mount_point=self.mount))
        try:
            return base64.b64decode(response["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ExternalError(f"Transit key {self.key_id} at {self.client.url} answered decrypt without a "
                                "plaintext") from exc

    def rewrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Transit's rewrap: decrypted and encrypted again under the key's newest version on the
        server (the data key never comes to shipmate). Returns `wrapped` itself when Transit wrapped
        it under the version it already had."""
        before = self._version_of(wrapped)
        response = self._call("rewrap", lambda: self.client.secrets.transit.rewrap_data(
            self.key, ciphertext=self._text(wrapped), context=_b64(aad), mount_point=self.mount))
        rewrapped = self._ciphertext(response, "rewrap")
        return wrapped if self._version_of(rewrapped) == before else rewrapped

    # --- key management -------------------------------------------------------------------

    def create_key(self) -> None:
        """Create the Transit key as shipmate needs it: `aes256-gcm96`, derived."""
        self._call("create the key", lambda: self.client.secrets.transit.create_key(
            self.key, key_type="aes256-gcm96", derived=True, mount_point=self.mount))

    def rotate(self) -> int:
        """Rotate the Transit key (Transit keeps the old versions for decryption); the new version."""
        response = self._call("rotate the key", lambda: self.client.secrets.transit.rotate_key(
            self.key, mount_point=self.mount))
        if isinstance(response, dict) and isinstance(response.get("data"), dict) \
                and isinstance(response["data"].get("latest_version"), int):
            return int(response["data"]["latest_version"])
        return self.latest_version()

    def latest_version(self) -> int:
        """The key's newest version (needs `read` on MOUNT/keys/KEY)."""
        response = self._call("read the key", lambda: self.client.secrets.transit.read_key(
            self.key, mount_point=self.mount))
        try:
            return int(response["data"]["latest_version"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExternalError(f"Transit key {self.key_id} at {self.client.url}: no latest_version") from exc

    # --- plumbing -------------------------------------------------------------------------

    def _encrypt(self, data_key: bytes, aad: bytes) -> bytes:
        response = self._call("encrypt", lambda: self.client.secrets.transit.encrypt_data(
            self.key, plaintext=_b64(data_key), context=_b64(aad), mount_point=self.mount))
        return self._ciphertext(response, "encrypt")

    def _check_derived(self) -> None:
        """Refuse a key that ignores `context` (not derived): it would not bind the AAD."""
        if self._checked:
            return
        probe = self._encrypt(os.urandom(32), b"shipmate-derivation-probe/a")
        try:
            self.unwrap(probe, b"shipmate-derivation-probe/b")
        except Tampered:
            self._checked = True
            return
        raise UserError(f"Transit key {self.key_id} at {self.client.url} is not a derived key: it ignores the "
                        "context that binds each data key to its secret; create the key with derived=true "
                        f"(bao write {self.mount}/keys/{self.key} type=aes256-gcm96 derived=true)")

    def _ciphertext(self, response: Any, what: str) -> bytes:
        try:
            text = response["data"]["ciphertext"]
        except (KeyError, TypeError) as exc:
            raise ExternalError(f"Transit key {self.key_id} at {self.client.url} answered {what} without a "
                                "ciphertext") from exc
        if not isinstance(text, str) or not text.startswith("vault:v"):
            raise ExternalError(f"Transit key {self.key_id} at {self.client.url} answered {what} with an "
                                "unexpected ciphertext")
        return text.encode("ascii")

    def _text(self, wrapped: bytes) -> str:
        try:
            return wrapped.decode("ascii")
        except UnicodeDecodeError:
            raise Tampered(f"not a data key wrapped by Transit key {self.key_id}: it was changed") from None

    def _version_of(self, wrapped: bytes) -> int:
        """The key version of a Transit ciphertext, which must be in canonical form: Transit itself
        reads `v0` as `v1` and is lenient with base64, so a changed byte could otherwise pass."""
        parts = self._text(wrapped).split(":", 2)
        digits = parts[1][1:] if len(parts) == 3 else ""
        try:
            payload = base64.b64decode(parts[2], validate=True) if len(parts) == 3 else b""
        except binascii.Error:
            payload = b""
        if parts[0] != "vault" or not parts[1].startswith("v") or not digits.isdigit() or str(int(digits)) != digits \
                or int(digits) < 1 or not payload or _b64(payload) != parts[2]:
            raise Tampered(f"not a data key wrapped by Transit key {self.key_id}: it was changed")
        return int(digits)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """Run one Transit request, translating hvac's and requests' errors into shipmate's."""
        where = f"Transit key {self.key_id} at {self.client.url}"
        try:
            return call()
        except hvac.exceptions.InvalidRequest as exc:
            message = truncate(str(exc).split(", on ")[0])
            if "not found" in message:
                raise WrongKey(f"{where} does not exist ({what}: {message})") from exc
            if "disallowed by policy" in message:
                raise WrongKey(f"{where} no longer decrypts the key version this data key was wrapped under "
                               f"({message}): rewrap before raising min_decryption_version") from exc
            if what in ("decrypt", "rewrap"):
                raise Tampered(f"{where} refused the wrapped data key ({message}): it or its associated data "
                               "was changed, or it was wrapped by another key") from exc
            raise ExternalError(f"{where}: {what} failed: {message}") from exc
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            raise ExternalError(f"{where}: the token may not {what} ({truncate(str(exc))}); check its policy") from exc
        except hvac.exceptions.VaultError as exc:
            raise ExternalError(f"{where}: {what} failed: {truncate(str(exc))}") from exc
        except requests.exceptions.RequestException as exc:
            raise ExternalError(f"cannot reach Vault at {self.client.url} to {what}: "
                                f"{truncate(type(exc).__name__ + ': ' + str(exc))}") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
