"""Generated secret values: each type's shape, its length rule, and no bias in passwords."""

from __future__ import annotations

import base64
import string

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from shipmate.secrets.generate import generate, password


def test_shapes_and_lengths() -> None:
    assert len(generate("bytes", 16)) == 16
    hexed = generate("hex", 16).decode()
    assert len(hexed) == 32
    assert set(hexed) <= set("0123456789abcdef")
    assert len(base64.b64decode(generate("base64", 24))) == 24
    jwt = generate("jwt-key", 8).decode()  # at least 32 bytes whatever the length says
    assert len(base64.urlsafe_b64decode(jwt + "=" * (-len(jwt) % 4))) == 32
    assert "=" not in jwt
    assert generate("hex", 16) != generate("hex", 16)


def test_passwords_hold_every_class_and_only_the_alphabet() -> None:
    for _ in range(50):
        value = password(12)
        assert len(value) == 12
        for cls in (string.ascii_lowercase, string.ascii_uppercase, string.digits, "-_.~!#%+="):
            assert any(c in cls for c in value)
    with pytest.raises(ValueError, match="at least 4"):
        password(3)


def test_passwords_are_drawn_without_modulo_bias() -> None:
    # a byte source that would favour the first characters under `byte % len(alphabet)`
    stream = iter(list(range(256)) * 40)
    value = password(2000, rng=lambda n: bytes(next(stream) for _ in range(n)))
    counts = {c: value.count(c) for c in set(value)}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_key_pairs_are_pkcs8_pem() -> None:
    ed = serialization.load_pem_private_key(generate("ed25519", 32), password=None)
    assert isinstance(ed, ed25519.Ed25519PrivateKey)
    key = serialization.load_pem_private_key(generate("rsa", 2048), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown secret type"):
        generate("uuid", 16)
