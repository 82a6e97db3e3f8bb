"""A key provider backed by AWS KMS, through boto3's KMS client.

`Encrypt` wraps a data key under the KMS key, `Decrypt` unwraps it, `ReEncrypt` moves it to the
key's current key material on the KMS side (the data key never comes to shipmate for it). Key
rotation is KMS's own (automatic yearly, or `rotate()`: RotateKeyOnDemand); KMS keeps the old
material, so wrapped keys keep opening until they are rewrapped.

The associated data is the `EncryptionContext`. shipmate's AAD is canonical JSON of a string map
(`crypto.encode_aad`), and that map itself becomes the context, so CloudTrail shows which app,
environment, secret and version a Decrypt was for; any other AAD bytes go in as
`{"shipmate-aad": BASE64}`. KMS authenticates the context: a wrapped key unwraps under the same one only.

boto3 is not a dependency of shipmate: it is imported when a provider is made without a client of
its own, and its absence is a one-line error naming the package. Called through the `KeyProvider`
protocol by `shipmate.secrets`. It must not log a data key or put one in an error; AWS's error
messages are truncated and raised `from` the original exception.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from shipmate.errors import ExternalError, UserError, truncate
from shipmate.secrets.crypto import Tampered, WrongKey

T = TypeVar("T")


class KmsClient(Protocol):
    """The part of boto3's KMS client this provider uses."""

    @property
    def exceptions(self) -> Any: ...

    def encrypt(self, **kwargs: Any) -> dict[str, Any]: ...

    def decrypt(self, **kwargs: Any) -> dict[str, Any]: ...

    def re_encrypt(self, **kwargs: Any) -> dict[str, Any]: ...

    def rotate_key_on_demand(self, **kwargs: Any) -> dict[str, Any]: ...


def encryption_context(aad: bytes) -> dict[str, str]:
    """The EncryptionContext for shipmate's canonical AAD bytes (see the module docstring)."""
    try:
        data = json.loads(aad)
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and data and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return data
    return {"shipmate-aad": base64.b64encode(aad).decode("ascii")}


def _boto3_client(region: str | None) -> KmsClient:
    try:
        import boto3
    except ImportError:
        raise UserError("the AWS KMS key provider needs the boto3 package: pip install boto3") from None
    client: KmsClient = boto3.client("kms", region_name=region)
    return client


def _transport_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:
        return ()
    return (BotoCoreError,)


class KmsKeyProvider:
    """Data keys wrapped by the KMS key `key` (key id, key ARN, alias name or alias ARN)."""

    id = "aws-kms"

    def __init__(self, key: str, *, client: KmsClient | None = None, region: str | None = None) -> None:
        self.key = key
        self.client = client if client is not None else _boto3_client(region)

    def __repr__(self) -> str:
        return f"KmsKeyProvider({self.key!r})"

    @property
    def key_id(self) -> str:
        return self.key

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        response = self._call("encrypt", lambda: self.client.encrypt(
            KeyId=self.key, Plaintext=data_key, EncryptionContext=encryption_context(aad)))
        return self._blob(response, "CiphertextBlob", "encrypt")

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        response = self._call("decrypt", lambda: self.client.decrypt(
            KeyId=self.key, CiphertextBlob=wrapped, EncryptionContext=encryption_context(aad)))
        return self._blob(response, "Plaintext", "decrypt")

    def rewrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """KMS ReEncrypt under the key's current material (KMS does not say whether it changed)."""
        context = encryption_context(aad)
        response = self._call("rewrap", lambda: self.client.re_encrypt(
            CiphertextBlob=wrapped, SourceKeyId=self.key, SourceEncryptionContext=context,
            DestinationKeyId=self.key, DestinationEncryptionContext=context))
        return self._blob(response, "CiphertextBlob", "rewrap")

    def rotate(self) -> None:
        """Ask KMS for new key material now (RotateKeyOnDemand)."""
        self._call("rotate the key", lambda: self.client.rotate_key_on_demand(KeyId=self.key))

    def _blob(self, response: dict[str, Any], field: str, what: str) -> bytes:
        value = response.get(field)
        if isinstance(value, str):  # some clients hand blobs back as base64 text
            try:
                value = base64.b64decode(value, validate=True)
            except binascii.Error:
                value = None
        if not isinstance(value, bytes | bytearray):
            raise ExternalError(f"KMS key {self.key} answered {what} without {field}")
        return bytes(value)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """Run one KMS request, translating the client's errors into shipmate's."""
        errors = self.client.exceptions
        where = f"KMS key {self.key}"
        try:
            return call()
        except errors.InvalidCiphertextException as exc:
            raise Tampered(f"{where} refused the wrapped data key: it or its encryption context was changed, "
                           "or it was wrapped by another key") from exc
        except (errors.IncorrectKeyException, errors.NotFoundException) as exc:
            raise WrongKey(f"{where} cannot {what} this data key ({truncate(str(exc))}): use the key it was "
                           "wrapped with") from exc
        except errors.ClientError as exc:
            raise ExternalError(f"{where}: {what} failed: {truncate(str(exc))}") from exc
        except _transport_errors() as exc:
            raise ExternalError(f"cannot reach KMS to {what} with {where}: {truncate(str(exc))}") from exc
