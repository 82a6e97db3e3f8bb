"""Envelope encryption (shipmate.secrets.crypto): round trips, every single-byte change caught and
named, a ciphertext moved to another secret refused with the fields that differ, wrong keys named,
rewrap without touching the value; and the key-provider contract that every provider passes, run
here against an in-memory provider (our own port's fake) and the AWS KMS provider over a KMS double.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from shipmate.errors import ExternalError, ShipmateError, UserError
from shipmate.secrets import crypto
from shipmate.secrets.aws import KmsKeyProvider, encryption_context
from shipmate.secrets.crypto import Misplaced, Sealed, Tampered, WrongKey

VALUE = b"correct horse battery staple \x00\xff"
AAD = crypto.secret_aad("shop", "prod", "DB_PASSWORD", 3)


class MemoryKeyProvider:
    """An in-memory `KeyProvider` (the fake of our own port): versioned AES-256-GCM master keys,
    the version in the first byte of a wrapped key, the AAD bound."""

    id = "memory"

    def __init__(self, key_id: str = "ring-a") -> None:
        self.key_id = key_id
        self.keys = {1: AESGCM.generate_key(bit_length=256)}
        self.calls: list[str] = []

    def rotate(self) -> int:
        version = max(self.keys) + 1
        self.keys[version] = AESGCM.generate_key(bit_length=256)
        return version

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        self.calls.append("wrap")
        version = max(self.keys)
        nonce = os.urandom(12)
        return bytes([version]) + nonce + AESGCM(self.keys[version]).encrypt(nonce, data_key, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        self.calls.append("unwrap")
        key = self.keys.get(wrapped[0]) if wrapped else None
        if key is None or len(wrapped) < 29:
            raise Tampered("not a wrapped key of this memory provider")
        try:
            return AESGCM(key).decrypt(wrapped[1:13], wrapped[13:], aad)
        except InvalidTag:
            raise Tampered("memory provider: wrapped key failed authentication") from None

    def rewrap(self, wrapped: bytes, aad: bytes) -> bytes:
        data_key = self.unwrap(wrapped, aad)
        return wrapped if wrapped[0] == max(self.keys) else self.wrap(data_key, aad)


def check_provider_contract(provider: Any, rotate: Callable[[], object] | None = None, *,
                            knows_newest: bool = True) -> None:
    """What every KeyProvider must do (shipmate.secrets.keys.KeyProvider); used by the integration
    tests of the local key file and Vault Transit too. `knows_newest`: the provider can tell that a
    wrapped key is under its newest version already (KMS cannot) and then rewraps it to itself."""
    data_key = os.urandom(32)
    aad = crypto.encode_aad(AAD)
    wrapped = provider.wrap(data_key, aad)
    assert isinstance(wrapped, bytes)
    assert data_key not in wrapped
    assert provider.unwrap(wrapped, aad) == data_key
    assert provider.wrap(data_key, aad) != wrapped, "every wrap uses a fresh nonce"
    with pytest.raises(Tampered):
        provider.unwrap(wrapped, crypto.encode_aad({**AAD, "version": "4"}))
    for i in (0, len(wrapped) // 2, len(wrapped) - 1):
        changed = bytearray(wrapped)
        changed[i] ^= 0x01
        with pytest.raises((Tampered, WrongKey)):
            provider.unwrap(bytes(changed), aad)
    assert provider.rewrap(wrapped, aad) == wrapped or provider.unwrap(provider.rewrap(wrapped, aad), aad) == data_key
    with pytest.raises(Tampered):
        provider.rewrap(wrapped, crypto.encode_aad({**AAD, "name": "OTHER"}))
    key_id = provider.key_id
    if rotate is not None:
        rotate()
        assert provider.key_id == key_id, "key_id names the key, not its version"
        assert provider.unwrap(wrapped, aad) == data_key, "old versions keep unwrapping"
        moved = provider.rewrap(wrapped, aad)
        assert moved != wrapped
        assert provider.unwrap(moved, aad) == data_key
        if knows_newest:
            assert provider.rewrap(moved, aad) == moved, "already under the newest version"
        else:
            assert provider.unwrap(provider.rewrap(moved, aad), aad) == data_key


# --- the in-memory provider and the contract ---------------------------------------------

def test_the_memory_provider_keeps_the_contract() -> None:
    provider = MemoryKeyProvider()
    check_provider_contract(provider, provider.rotate)


# --- seal and open ------------------------------------------------------------------------

@pytest.mark.parametrize("value", [b"", b"x", VALUE, os.urandom(1 << 20)], ids=["empty", "one", "text", "1MiB"])
def test_round_trip(value: bytes) -> None:
    provider = MemoryKeyProvider()
    sealed = crypto.seal(value, AAD, provider)
    assert crypto.open_(sealed, AAD, provider) == value
    assert crypto.open_(sealed.to_text(), AAD, provider) == value
    assert crypto.open_(sealed.to_text().encode(), AAD, provider) == value


@settings(max_examples=60, deadline=None)
@given(value=st.binary(max_size=512),
       app=st.text(max_size=20), env=st.text(min_size=1, max_size=20), name=st.text(min_size=1, max_size=40),
       version=st.integers(min_value=1, max_value=2**40))
def test_round_trip_for_any_value_and_names(value: bytes, app: str, env: str, name: str, version: int) -> None:
    provider = MemoryKeyProvider()
    aad = crypto.secret_aad(app, env, name, version)
    text = crypto.seal(value, aad, provider).to_text()
    assert crypto.open_(Sealed.from_text(text), aad, provider) == value


def test_every_seal_has_a_fresh_data_key_and_nonce() -> None:
    provider = MemoryKeyProvider()
    one, two = crypto.seal(VALUE, AAD, provider), crypto.seal(VALUE, AAD, provider)
    assert one.nonce != two.nonce
    assert one.ciphertext != two.ciphertext
    assert provider.unwrap(one.wrapped, crypto.encode_aad(AAD)) != provider.unwrap(two.wrapped, crypto.encode_aad(AAD))
    assert len(one.nonce) == 12
    assert len(one.ciphertext) == len(VALUE) + 16


def test_the_serialised_form_is_versioned_and_self_describing() -> None:
    provider = MemoryKeyProvider()
    text = crypto.seal(VALUE, AAD, provider).to_text()
    data = json.loads(text)
    assert data["format"] == "shipmate-sealed/1"
    assert data["alg"] == "AES-256-GCM"
    assert (data["provider"], data["key"]) == ("memory", "ring-a")
    assert data["aad"] == AAD
    assert set(data) == {"format", "alg", "provider", "key", "aad", "wrapped", "nonce", "ct"}
    assert "\n" not in text


@pytest.mark.parametrize(("field_name", "other", "named"), [
    ("name", "API_KEY", "name 'DB_PASSWORD', not 'API_KEY'"),
    ("version", "2", "version '3', not '2'"),
    ("environment", "staging", "environment 'prod', not 'staging'"),
    ("app", "blog", "app 'shop', not 'blog'"),
])
def test_a_ciphertext_moved_to_another_secret_fails_and_names_what_differs(field_name: str, other: str,
                                                                          named: str) -> None:
    provider = MemoryKeyProvider()
    sealed = crypto.seal(VALUE, AAD, provider)
    with pytest.raises(Misplaced) as caught:
        crypto.open_(sealed, {**AAD, field_name: other}, provider)
    assert named in str(caught.value)
    assert "holds a value sealed for another secret" in str(caught.value)


def test_a_recorded_aad_edited_to_match_does_not_help() -> None:
    """Moving a value AND rewriting its recorded AAD to the new place: GCM still refuses it."""
    provider = MemoryKeyProvider()
    data = json.loads(crypto.seal(VALUE, AAD, provider).to_text())
    data["aad"]["name"] = "API_KEY"
    forged = json.dumps(data, sort_keys=True, separators=(",", ":"))
    with pytest.raises(Tampered, match="wrapped data key failed authentication") as caught:
        crypto.open_(forged, {**AAD, "name": "API_KEY"}, provider)
    assert not isinstance(caught.value, Misplaced)


def test_every_single_byte_change_is_detected() -> None:
    provider = MemoryKeyProvider()
    text = crypto.seal(VALUE, AAD, provider).to_text().encode()
    kinds: set[str] = set()
    for i in range(len(text)):
        for change in (0x01, 0x20, 0x80):
            tampered = bytearray(text)
            tampered[i] ^= change
            with pytest.raises((Tampered, WrongKey)) as caught:
                crypto.open_(bytes(tampered), AAD, provider)
            kinds.add(type(caught.value).__name__)
            assert VALUE.decode(errors="ignore")[:10] not in str(caught.value)
    assert {"Tampered", "WrongKey"} <= kinds


@pytest.mark.parametrize(("part", "message"), [
    ("ct", "its ciphertext failed authentication"),
    ("nonce", "its ciphertext failed authentication"),
    ("wrapped", "its wrapped data key failed authentication"),
])
def test_a_changed_part_is_named(part: str, message: str) -> None:
    provider = MemoryKeyProvider()
    data = json.loads(crypto.seal(VALUE, AAD, provider).to_text())
    raw = bytearray(base64.b64decode(data[part]))
    raw[-1] ^= 0x01
    data[part] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(Tampered, match=message) as caught:
        crypto.open_(json.dumps(data, sort_keys=True, separators=(",", ":")), AAD, provider)
    assert "secret prod/DB_PASSWORD version 3 of app shop" in str(caught.value)


@pytest.mark.parametrize(("text", "message"), [
    ("", "not a readable sealed value"),
    ("[]", "not a JSON object"),
    ('{"format":"shipmate-sealed/9"}', "format is not shipmate-sealed/1"),
])
def test_unreadable_forms_are_refused(text: str, message: str) -> None:
    with pytest.raises(Tampered, match=message):
        crypto.open_(text, AAD, MemoryKeyProvider())


def test_a_non_canonical_form_is_refused() -> None:
    provider = MemoryKeyProvider()
    text = crypto.seal(VALUE, AAD, provider).to_text()
    spaced = json.dumps(json.loads(text), sort_keys=True)
    with pytest.raises(Tampered, match="not in canonical form"):
        crypto.open_(spaced, AAD, provider)


def test_a_wrong_key_is_named() -> None:
    sealed = crypto.seal(VALUE, AAD, MemoryKeyProvider("ring-a"))
    with pytest.raises(WrongKey, match="sealed under memory key 'ring-a', but the key given is 'ring-b'"):
        crypto.open_(sealed, AAD, MemoryKeyProvider("ring-b"))
    other = MemoryKeyProvider("ring-a")
    other.id = "elsewhere"  # type: ignore[misc]
    with pytest.raises(WrongKey, match="sealed with key provider 'memory', not 'elsewhere'"):
        crypto.open_(sealed, AAD, other)
    impostor = MemoryKeyProvider("ring-a")  # same names, other key material
    with pytest.raises(Tampered, match="wrapped data key failed authentication"):
        crypto.open_(sealed, AAD, impostor)
    assert issubclass(WrongKey, UserError)


def test_repr_and_errors_never_show_the_value() -> None:
    provider = MemoryKeyProvider()
    sealed = crypto.seal(b"s3cr3t-value", AAD, provider)
    assert "s3cr3t" not in repr(sealed)
    assert repr(sealed) == ("Sealed(provider='memory', key_id='ring-a', "
                            "for='secret prod/DB_PASSWORD version 3 of app shop')")


# --- rewrap -------------------------------------------------------------------------------

def test_rewrap_moves_the_data_key_to_the_newest_master_key_without_touching_the_value() -> None:
    provider = MemoryKeyProvider()
    sealed = crypto.seal(VALUE, AAD, provider)
    assert crypto.rewrap(sealed, AAD, provider) == sealed
    provider.rotate()
    moved = crypto.rewrap(sealed, AAD, provider)
    assert moved.wrapped != sealed.wrapped
    assert moved.wrapped[0] == 2
    assert (moved.nonce, moved.ciphertext, moved.aad) == (sealed.nonce, sealed.ciphertext, sealed.aad)
    assert crypto.open_(moved, AAD, provider) == VALUE
    del provider.keys[1]
    assert crypto.open_(moved, AAD, provider) == VALUE
    with pytest.raises(Tampered):
        crypto.open_(sealed, AAD, provider)


def test_rewrap_to_another_provider_migrates() -> None:
    old, new = MemoryKeyProvider("ring-a"), MemoryKeyProvider("ring-b")
    sealed = crypto.seal(VALUE, AAD, old)
    moved = crypto.rewrap(sealed.to_text(), AAD, old, to=new)
    assert (moved.provider, moved.key_id) == ("memory", "ring-b")
    assert (moved.nonce, moved.ciphertext) == (sealed.nonce, sealed.ciphertext)
    assert crypto.open_(moved, AAD, new) == VALUE
    with pytest.raises(WrongKey):
        crypto.open_(moved, AAD, old)


def test_rewrap_refuses_a_misplaced_or_changed_value() -> None:
    provider = MemoryKeyProvider()
    sealed = crypto.seal(VALUE, AAD, provider)
    with pytest.raises(Misplaced, match="version '3', not '4'"):
        crypto.rewrap(sealed, {**AAD, "version": "4"}, provider)
    broken = bytearray(sealed.wrapped)
    broken[-1] ^= 1
    with pytest.raises(Tampered):
        crypto.rewrap(Sealed(sealed.provider, sealed.key_id, sealed.aad, bytes(broken), sealed.nonce,
                             sealed.ciphertext), AAD, provider)


def test_the_error_tree() -> None:
    assert issubclass(Misplaced, Tampered)
    assert issubclass(Tampered, ShipmateError)
    assert not issubclass(Tampered, UserError)


# --- AWS KMS, through a double ------------------------------------------------------------

class _ClientError(Exception):
    pass


class _Exceptions:
    ClientError = _ClientError
    InvalidCiphertextException = type("InvalidCiphertextException", (_ClientError,), {})
    IncorrectKeyException = type("IncorrectKeyException", (_ClientError,), {})
    NotFoundException = type("NotFoundException", (_ClientError,), {})


@dataclass
class KmsDouble:
    """A test double of boto3's KMS client. AWS KMS cannot run here (no network but package
    registries), so this small stand-in keeps the part of the KMS API contract the provider relies
    on: Encrypt/Decrypt/ReEncrypt take and return bytes; the ciphertext blob names its key and
    key material version; Decrypt and ReEncrypt need exactly the EncryptionContext used to encrypt
    and raise InvalidCiphertextException otherwise (or on any changed byte); an unknown key id
    raises NotFoundException, a blob of another key IncorrectKeyException; RotateKeyOnDemand adds
    key material and old material keeps decrypting."""

    keys: dict[str, list[bytes]] = field(default_factory=lambda: {"alias/shipmate": [os.urandom(32)]})
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    exceptions: Any = _Exceptions

    def _context(self, context: dict[str, str]) -> bytes:
        return json.dumps(context, sort_keys=True).encode()

    def _material(self, key: str) -> list[bytes]:
        if key not in self.keys:
            raise _Exceptions.NotFoundException(f"Key '{key}' does not exist")
        return self.keys[key]

    def _encrypt(self, key: str, plaintext: bytes, context: dict[str, str]) -> bytes:
        material = self._material(key)
        nonce = os.urandom(12)
        head = key.encode() + b"\x00" + bytes([len(material) - 1])
        return head + nonce + AESGCM(material[-1]).encrypt(nonce, plaintext, head + self._context(context))

    def _decrypt(self, key: str, blob: bytes, context: dict[str, str]) -> bytes:
        name, _, rest = blob.partition(b"\x00")
        if name.decode(errors="replace") != key:
            if name.decode(errors="replace") in self.keys:
                raise _Exceptions.IncorrectKeyException("the ciphertext was encrypted under another key")
            raise _Exceptions.InvalidCiphertextException("")
        material = self._material(key)
        if not rest or rest[0] >= len(material):
            raise _Exceptions.InvalidCiphertextException("")
        head = blob[:len(name) + 2]
        try:
            return AESGCM(material[rest[0]]).decrypt(rest[1:13], rest[13:], head + self._context(context))
        except InvalidTag:
            raise _Exceptions.InvalidCiphertextException("") from None

    def encrypt(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(("Encrypt", kwargs))
        return {"CiphertextBlob": self._encrypt(kwargs["KeyId"], kwargs["Plaintext"], kwargs["EncryptionContext"]),
                "KeyId": kwargs["KeyId"]}

    def decrypt(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(("Decrypt", kwargs))
        return {"Plaintext": self._decrypt(kwargs["KeyId"], kwargs["CiphertextBlob"], kwargs["EncryptionContext"])}

    def re_encrypt(self, **kwargs: Any) -> dict[str, Any]:
        self.requests.append(("ReEncrypt", kwargs))
        plaintext = self._decrypt(kwargs["SourceKeyId"], kwargs["CiphertextBlob"], kwargs["SourceEncryptionContext"])
        return {"CiphertextBlob": self._encrypt(kwargs["DestinationKeyId"], plaintext,
                                                kwargs["DestinationEncryptionContext"])}

    def rotate_key_on_demand(self, **kwargs: Any) -> dict[str, Any]:
        self._material(kwargs["KeyId"]).append(os.urandom(32))
        return {"KeyId": kwargs["KeyId"]}


def test_kms_provider_keeps_the_contract_against_the_double() -> None:
    provider = KmsKeyProvider("alias/shipmate", client=KmsDouble())
    check_provider_contract(provider, provider.rotate, knows_newest=False)


def test_kms_encryption_context_is_the_aad() -> None:
    double = KmsDouble()
    provider = KmsKeyProvider("alias/shipmate", client=double)
    sealed = crypto.seal(VALUE, AAD, provider)
    assert crypto.open_(sealed, AAD, provider) == VALUE
    (_, encrypt), (_, decrypt) = double.requests[0], double.requests[-1]
    assert encrypt["EncryptionContext"] == AAD
    assert decrypt["EncryptionContext"] == AAD
    assert encryption_context(b"\x00raw") == {"shipmate-aad": "AHJhdw=="}
    with pytest.raises(Misplaced, match="name 'DB_PASSWORD', not 'OTHER'"):
        crypto.open_(sealed, {**AAD, "name": "OTHER"}, provider)


def test_kms_errors_are_translated() -> None:
    double = KmsDouble()
    provider = KmsKeyProvider("alias/shipmate", client=double)
    wrapped = provider.wrap(os.urandom(32), b"{}")
    with pytest.raises(WrongKey, match="KMS key alias/missing cannot decrypt"):
        KmsKeyProvider("alias/missing", client=double).unwrap(wrapped, b"{}")
    double.keys["alias/other"] = [os.urandom(32)]
    with pytest.raises(WrongKey, match="use the key it was wrapped with"):
        KmsKeyProvider("alias/other", client=double).unwrap(wrapped, b"{}")
    with pytest.raises(Tampered, match="refused the wrapped data key"):
        provider.unwrap(wrapped + b"x", b"{}")

    def throttled(**_: Any) -> dict[str, Any]:
        raise _ClientError("ThrottlingException: Rate exceeded")

    double.encrypt = throttled  # type: ignore[method-assign]
    with pytest.raises(ExternalError, match="KMS key alias/shipmate: encrypt failed: ThrottlingException"):
        provider.wrap(os.urandom(32), b"{}")


def test_kms_without_boto3_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(UserError) as caught:
        KmsKeyProvider("alias/shipmate")
    assert str(caught.value) == "the AWS KMS key provider needs the boto3 package: pip install boto3"
