"""New secret values for `generate:` secrets. Pure apart from the randomness it is given.

Called by whoever first needs a generated secret's value (the local target today, the encrypted
store when it lands). What `length` means depends on the type:

| type     | value                                                        | length              |
| -------- | ------------------------------------------------------------ | ------------------- |
| bytes    | raw random bytes (binary)                                    | bytes               |
| hex      | lowercase hex text                                           | random bytes (text is twice as long) |
| base64   | standard base64 text                                         | random bytes        |
| jwt-key  | an HMAC signing key as base64url text without padding        | random bytes (>= 32 enforced) |
| password | letters, digits and `-_.~!#%+=` with one of each class at least | characters       |
| rsa      | an RSA private key, PKCS#8 PEM                               | bits when >= 2048, else 3072 |
| ed25519  | an Ed25519 private key, PKCS#8 PEM                           | ignored             |

It must not log or return anything but the value; the caller keeps it secret.
"""

from __future__ import annotations

import base64
import os
import string
from collections.abc import Callable

Random = Callable[[int], bytes]

_CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits, "-_.~!#%+=")
_ALPHABET = "".join(_CLASSES)


def _choice(alphabet: str, rng: Random) -> str:
    """One character of `alphabet`, uniformly (rejection sampling, no modulo bias)."""
    limit = 256 - 256 % len(alphabet)
    while True:
        byte = rng(1)[0]
        if byte < limit:
            return alphabet[byte % len(alphabet)]


def password(length: int, rng: Random = os.urandom) -> str:
    """A password of `length` characters holding at least one character of each class."""
    if length < len(_CLASSES):
        raise ValueError(f"a password needs at least {len(_CLASSES)} characters")
    while True:
        value = "".join(_choice(_ALPHABET, rng) for _ in range(length))
        if all(any(c in cls for c in value) for cls in _CLASSES):
            return value


def generate(kind: str, length: int, rng: Random = os.urandom) -> bytes:
    """A new value of a `generate:` secret (see the module docstring for `kind` and `length`)."""
    if kind == "bytes":
        return rng(length)
    if kind == "hex":
        return rng(length).hex().encode()
    if kind == "base64":
        return base64.b64encode(rng(length))
    if kind == "jwt-key":
        return base64.urlsafe_b64encode(rng(max(length, 32))).rstrip(b"=")
    if kind == "password":
        return password(length, rng).encode()
    if kind in ("rsa", "ed25519"):
        return _key_pair(kind, length)
    raise ValueError(f"unknown secret type {kind!r}")


def _key_pair(kind: str, length: int) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=length if length >= 2048 else 3072)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
