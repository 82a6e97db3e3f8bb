"""Envelope encryption of one secret value, and the errors every part of `shipmate.secrets` raises
when a ciphertext is not what it should be.

Each value gets a fresh AES-256-GCM data key and a random 96-bit nonce; the data key is wrapped by a
`KeyProvider` (`shipmate.secrets.keys`). The associated data (AAD) is a small str -> str mapping
(for a stored secret: app, environment, name, version; see `secret_aad`) encoded canonically by
`encode_aad`; it authenticates the value *and* the wrapped data key, so a sealed value moved to
another name or version does not open. `open_` then says which field did not match.

The serialised form (`Sealed.to_text`) is one line of canonical JSON (sorted keys, no spaces,
ASCII, standard padded base64):

    {"aad":{...},"alg":"AES-256-GCM","ct":B64,"format":"shipmate-sealed/1","key":KEY_ID,
     "nonce":B64,"provider":PROVIDER_ID,"wrapped":B64}

`aad` is a copy of the associated data the value was sealed for. It is never trusted: the caller's
expected AAD is what authenticates, and the copy is only used to name a mismatch. A text that is
not byte-for-byte the canonical form of what it parses to is refused, so every changed byte is
either a changed field (caught by GCM, by the provider or by the header checks) or a refusal.

    ShipmateError
    ├── Tampered          bytes were changed: a tag, a wrapped key or the form itself fails
    │   └── Misplaced     authentic, but sealed for another secret (names the fields that differ)
    └── UserError
        └── WrongKey      sealed under another provider or key than the one given

Called by `shipmate.secrets.store` (values in the control-plane store) and the key providers
(which reuse `gcm_encrypt`/`gcm_decrypt` and the errors); `fileform` shares the primitives.
Pure: no file, network or database I/O of its own (the provider it is handed does that), and it
must never put a value, a data key or a plaintext in an error, a log line or a repr.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shipmate.errors import ShipmateError, UserError

if TYPE_CHECKING:
    from shipmate.secrets.keys import KeyProvider

FORMAT = "shipmate-sealed/1"
ALGORITHM = "AES-256-GCM"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

Aad = Mapping[str, str]


class Tampered(ShipmateError):
    """A ciphertext, a wrapped key or a sealed form was changed: nothing was decrypted."""


class Misplaced(Tampered):
    """An authentic ciphertext sealed for another secret (or key path) than the one asked for."""


class WrongKey(UserError):
    """Sealed under another key provider or key than the one given: use the key it names."""


# --- primitives ---------------------------------------------------------------------------

def new_data_key() -> bytes:
    """A fresh random AES-256 key."""
    return AESGCM.generate_key(bit_length=256)


def gcm_encrypt(key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext with its 16-byte tag) under a random 96-bit nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, aad)


def gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """The plaintext; raises `cryptography.exceptions.InvalidTag` when anything does not authenticate."""
    return AESGCM(key).decrypt(nonce, ciphertext, aad)


def encode_aad(aad: Aad) -> bytes:
    """The canonical bytes of associated data: JSON with sorted keys, no spaces, ASCII only."""
    return json.dumps(dict(aad), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def secret_aad(app: str, environment: str, name: str, version: int) -> dict[str, str]:
    """The associated data of version `version` of secret `name` of `app` in `environment`."""
    return {"use": "secret", "app": app, "environment": environment, "name": name, "version": str(version)}


def describe(aad: Aad) -> str:
    """How errors name what a ciphertext belongs to (never its value)."""
    if {"environment", "name", "version"} <= aad.keys():
        app = f" of app {aad['app']}" if aad.get("app") else ""
        return f"secret {aad['environment']}/{aad['name']} version {aad['version']}{app}"
    return ", ".join(f"{k}={v}" for k, v in sorted(aad.items())) or "the value"


# --- the sealed form ----------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, field: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{field} is not a string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"{field} is not base64") from exc


@dataclass(frozen=True)
class Sealed:
    """One encrypted value: which provider and key wrapped its data key, the wrapped key, the nonce
    and the ciphertext (with its tag). `aad` records what it was sealed for (informative only)."""

    provider: str
    key_id: str
    aad: tuple[tuple[str, str], ...]
    wrapped: bytes
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"Sealed(provider={self.provider!r}, key_id={self.key_id!r}, for={describe(dict(self.aad))!r})"

    def to_text(self) -> str:
        """The canonical one-line JSON form (see the module docstring)."""
        return json.dumps({
            "format": FORMAT, "alg": ALGORITHM, "provider": self.provider, "key": self.key_id,
            "aad": dict(self.aad), "wrapped": _b64(self.wrapped), "nonce": _b64(self.nonce),
            "ct": _b64(self.ciphertext),
        }, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_text(cls, text: str | bytes, *, what: str = "the sealed value") -> Sealed:
        """Parse the canonical form; anything else raises Tampered naming `what`."""
        try:
            raw = text.decode("utf-8") if isinstance(text, bytes) else text
            sealed = cls._parse(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise Tampered(f"{what} is not a readable sealed value ({exc}): it was changed or is not "
                           "shipmate's") from None
        if sealed.to_text() != raw:
            raise Tampered(f"{what} is not in canonical form: it was changed after sealing")
        return sealed

    @classmethod
    def _parse(cls, data: object) -> Sealed:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        if data.get("alg") != ALGORITHM:
            raise ValueError(f"alg is not {ALGORITHM}")
        if set(data) != {"format", "alg", "provider", "key", "aad", "wrapped", "nonce", "ct"}:
            raise ValueError("unexpected or missing fields")
        aad = data["aad"]
        if not isinstance(aad, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in aad.items()):
            raise ValueError("aad is not a mapping of strings")
        provider, key_id = data["provider"], data["key"]
        if not isinstance(provider, str) or not isinstance(key_id, str):
            raise ValueError("provider and key must be strings")
        nonce, ciphertext = _unb64(data["nonce"], "nonce"), _unb64(data["ct"], "ct")
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce is not {NONCE_BYTES} bytes")
        if len(ciphertext) < TAG_BYTES:
            raise ValueError("ct is shorter than its tag")
        return cls(provider, key_id, tuple(sorted(aad.items())), _unb64(data["wrapped"], "wrapped"), nonce,
                   ciphertext)


# --- seal, open, rewrap -------------------------------------------------------------------

def seal(value: bytes, aad: Aad, provider: KeyProvider) -> Sealed:
    """Encrypt `value` under a fresh data key bound to `aad`, the data key wrapped by `provider`."""
    encoded = encode_aad(aad)
    data_key = new_data_key()
    nonce, ciphertext = gcm_encrypt(data_key, value, encoded)
    wrapped = provider.wrap(data_key, encoded)
    return Sealed(provider.id, provider.key_id, tuple(sorted(aad.items())), wrapped, nonce, ciphertext)


def _sealed(sealed: Sealed | str | bytes, what: str) -> Sealed:
    return sealed if isinstance(sealed, Sealed) else Sealed.from_text(sealed, what=what)


def _check_key(sealed: Sealed, provider: KeyProvider, what: str) -> None:
    if sealed.provider != provider.id:
        raise WrongKey(f"{what} was sealed with key provider {sealed.provider!r}, not {provider.id!r}: open it "
                       "with that provider (or its sealed form was changed)")
    if sealed.key_id != provider.key_id:
        raise WrongKey(f"{what} was sealed under {sealed.provider} key {sealed.key_id!r}, but the key given is "
                       f"{provider.key_id!r}: wrong key (or its sealed form was changed)")


def _unwrap(sealed: Sealed, encoded: bytes, provider: KeyProvider, what: str) -> bytes:
    try:
        data_key = provider.unwrap(sealed.wrapped, encoded)
    except Misplaced:
        raise
    except Tampered as exc:
        raise Tampered(f"{what}: its wrapped data key failed authentication ({exc})") from None
    if len(data_key) != KEY_BYTES:
        raise Tampered(f"{what}: its wrapped data key did not unwrap to a {KEY_BYTES}-byte key")
    return data_key


def _mismatch(sealed: Sealed, aad: Aad, provider: KeyProvider, what: str) -> None:
    """Raise Misplaced if `sealed` authentically belongs to the AAD it records, else Tampered."""
    recorded = dict(sealed.aad)
    encoded = encode_aad(recorded)
    try:
        data_key = provider.unwrap(sealed.wrapped, encoded)
        gcm_decrypt(data_key, sealed.nonce, sealed.ciphertext, encoded)
    except (Tampered, InvalidTag):
        raise Tampered(f"{what} failed authentication: it was changed after sealing") from None
    differ = [f"{k} {recorded.get(k, '(none)')!r}, not {aad.get(k, '(none)')!r}"
              for k in sorted(set(recorded) | set(aad)) if recorded.get(k) != aad.get(k)]
    raise Misplaced(f"{what} holds a value sealed for another secret: {'; '.join(differ)}")


def open_(sealed: Sealed | str | bytes, aad: Aad, provider: KeyProvider) -> bytes:
    """The value of `sealed` if it was sealed for exactly `aad` and nothing changed; else Tampered
    (Misplaced naming the fields that differ) or WrongKey. Never a wrong plaintext."""
    what = describe(aad)
    parsed = _sealed(sealed, what)
    _check_key(parsed, provider, what)
    if dict(parsed.aad) != dict(aad):
        _mismatch(parsed, aad, provider, what)
    encoded = encode_aad(aad)
    data_key = _unwrap(parsed, encoded, provider, what)
    try:
        return gcm_decrypt(data_key, parsed.nonce, parsed.ciphertext, encoded)
    except InvalidTag:
        raise Tampered(f"{what}: its ciphertext failed authentication (changed after sealing)") from None


def rewrap(sealed: Sealed | str | bytes, aad: Aad, provider: KeyProvider, *, to: KeyProvider | None = None) -> Sealed:
    """`sealed` with its data key wrapped again: under `provider`'s newest key version (through the
    provider's own rewrap, so Transit never hands the key out), or, with `to`, under another
    provider. The nonce and ciphertext are kept as they are: the value is not touched."""
    what = describe(aad)
    parsed = _sealed(sealed, what)
    _check_key(parsed, provider, what)
    if dict(parsed.aad) != dict(aad):
        _mismatch(parsed, aad, provider, what)
    encoded = encode_aad(aad)
    if to is None:
        try:
            wrapped = provider.rewrap(parsed.wrapped, encoded)
        except Misplaced:
            raise
        except Tampered as exc:
            raise Tampered(f"{what}: its wrapped data key failed authentication ({exc})") from None
        return replace(parsed, wrapped=wrapped)
    data_key = _unwrap(parsed, encoded, provider, what)
    return replace(parsed, provider=to.id, key_id=to.key_id, wrapped=to.wrap(data_key, encoded))
