"""Player tokens: JSON Web Tokens signed with HS256, made with the standard library only.

Called by the api-server (it signs a token when a player joins and verifies it on every action)
and by the ws-gateway (it verifies the token of each socket). Keys come from `secrets.SigningKeys`;
this module never reads files, never logs, and never puts a key or a token in an error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

_HEADER = {"alg": "HS256", "typ": "JWT"}


class InvalidToken(Exception):
    """The token is malformed, signed with an unknown key, or expired (the message says which)."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise InvalidToken("malformed token") from error


def _signature(signing_input: bytes, key: bytes) -> bytes:
    return hmac.new(key, signing_input, hashlib.sha256).digest()


def sign(claims: Mapping[str, Any], key: bytes) -> str:
    """A compact HS256 JWT of `claims`."""
    header = _b64encode(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload = _b64encode(json.dumps(dict(claims), separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    return f"{header}.{payload}.{_b64encode(_signature(signing_input, key))}"


def verify(token: str, keys: Sequence[bytes], now: float | None = None) -> dict[str, Any]:
    """The claims of `token` if one of `keys` signed it with HS256 and it has not expired."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidToken("malformed token")
    try:
        header = json.loads(_b64decode(parts[0]))
    except ValueError as error:
        raise InvalidToken("malformed token header") from error
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise InvalidToken("token is not signed with HS256")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    given = _b64decode(parts[2])
    if not any(hmac.compare_digest(_signature(signing_input, key), given) for key in keys):
        raise InvalidToken("bad token signature")
    try:
        claims = json.loads(_b64decode(parts[1]))
    except ValueError as error:
        raise InvalidToken("malformed token payload") from error
    if not isinstance(claims, dict):
        raise InvalidToken("malformed token payload")
    expires = claims.get("exp")
    if isinstance(expires, int | float) and (time.time() if now is None else now) >= expires:
        raise InvalidToken("token expired")
    return claims
