"""The git-storable form of a secrets file (YAML, JSON or .env), in the manner of SOPS: keys stay
readable, every leaf value is encrypted, and the file carries what it takes to open it.

    db:
      password: ENC[AES256_GCM,data:B64,iv:B64,tag:B64,type:str]
      port: ENC[AES256_GCM,data:B64,iv:B64,tag:B64,type:int]
    _shipmate:
      format: shipmate-file/1
      recipients:
      - {provider: local, key: RING_ID, wrapped: B64}
      mac: hmac-sha256:HEX

- One random data key per file. From it HKDF-SHA256 derives a value key and a MAC key.
- Each value is encrypted with AES-256-GCM under the value key and a random 96-bit nonce. Its
  associated data is its key path (`["db", "password"]`, list indexes as numbers) and its type
  (str, int, float, bool, null, bytes, date, datetime), so a value moved to another key does not
  decrypt, and `decrypt_document` names the key it was encrypted for when that key is in the file.
- The data key is wrapped once per recipient (any `KeyProvider`). Any one of them opens the file.
- The MAC is an HMAC-SHA256 under the MAC key over every key path and encrypted value, in document
  order (empty mappings and lists included), so a value that is changed, removed, added or
  reordered is caught even where each value alone still decrypts.
- In a .env file the `_shipmate` section is one line, `_shipmate=BASE64URL(JSON)`.

Called by the `secrets encrypt|decrypt|edit` commands (to come) with text they read and write
themselves. Pure: it parses and produces text, never touches a file, the network or a clock (the
providers it is handed do their own I/O). It must never put a plaintext value in an error: errors
name key paths only.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shipmate.errors import Location, SpecError, UsageError, UserError
from shipmate.secrets.crypto import (
    NONCE_BYTES,
    TAG_BYTES,
    Misplaced,
    Tampered,
    WrongKey,
    encode_aad,
    gcm_decrypt,
    gcm_encrypt,
    new_data_key,
)

if TYPE_CHECKING:
    from shipmate.secrets.keys import KeyProvider

META_KEY = "_shipmate"
FORMAT = "shipmate-file/1"
FORMATS = ("yaml", "json", "dotenv")
MAC_PREFIX = "hmac-sha256:"
KINDS = ("str", "int", "float", "bool", "null", "bytes", "date", "datetime")
FILE_AAD = encode_aad({"use": "file", "format": FORMAT})

KeyPath = tuple[str | int, ...]

_B64 = "[A-Za-z0-9+/]*={0,2}"
_ENC = re.compile(rf"ENC\[AES256_GCM,data:({_B64}),iv:({_B64}),tag:({_B64}),type:([a-z]+)\]\Z")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it
_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def show(path: KeyPath) -> str:
    """A key path as people read it: `db.password`, `users[0].token`, `a["b.c"]`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    return text or "(the top level)"


# --- encrypt / decrypt --------------------------------------------------------------------

def _keys(data_key: bytes) -> tuple[bytes, bytes]:
    both = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=b"shipmate-file/1 value+mac").derive(data_key)
    return both[:32], both[32:]


def _value_aad(path: KeyPath, kind: str) -> bytes:
    return json.dumps({"path": list(path), "type": kind}, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _mac(mac_key: bytes, entries: list[tuple[KeyPath, str]]) -> str:
    body = json.dumps([FORMAT, [[list(p), v] for p, v in entries]], separators=(",", ":"), ensure_ascii=True)
    return MAC_PREFIX + hmac.new(mac_key, body.encode("ascii"), hashlib.sha256).hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _render(ciphertext: bytes, nonce: bytes, tag: bytes, kind: str) -> str:
    return f"ENC[AES256_GCM,data:{_b64(ciphertext)},iv:{_b64(nonce)},tag:{_b64(tag)},type:{kind}]"


def _encode_leaf(value: object, path: KeyPath) -> tuple[str, bytes]:
    if isinstance(value, bool):
        return "bool", b"true" if value else b"false"
    if isinstance(value, int):
        return "int", str(value).encode()
    if isinstance(value, float):
        return "float", repr(value).encode()
    if isinstance(value, str):
        try:
            return "str", value.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{show(path)}: the value is not valid Unicode text") from None
    if value is None:
        return "null", b""
    if isinstance(value, bytes):
        return "bytes", value
    if isinstance(value, dt.datetime):
        return "datetime", value.isoformat().encode()
    if isinstance(value, dt.date):
        return "date", value.isoformat().encode()
    raise UserError(f"{show(path)}: cannot encrypt a value of type {type(value).__name__}")


def _decode_leaf(kind: str, plain: bytes, path: KeyPath) -> Any:
    try:
        text = plain.decode("utf-8") if kind != "bytes" else ""
        if kind == "str":
            return text
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool" and text in ("true", "false"):
            return text == "true"
        if kind == "null" and not plain:
            return None
        if kind == "bytes":
            return plain
        if kind == "datetime":
            return dt.datetime.fromisoformat(text)
        if kind == "date":
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise Tampered(f"the value at {show(path)} does not decode as {kind}")


def encrypt_document(data: Mapping[str, Any], recipients: Sequence[KeyProvider]) -> dict[str, Any]:
    """`data` with every leaf value encrypted and a `_shipmate` section that any one of
    `recipients` opens (see the module docstring)."""
    if not recipients:
        raise UsageError("an encrypted file needs at least one recipient (key provider)")
    if META_KEY in data:
        raise UserError(f"the document already has a top-level {META_KEY!r} key: it is encrypted already, "
                        "or that key name is taken")
    data_key = new_data_key()
    value_key, mac_key = _keys(data_key)
    entries: list[tuple[KeyPath, str]] = []

    def walk(node: Any, path: KeyPath) -> Any:
        if isinstance(node, Mapping):
            if not node:
                entries.append((path, "{}"))
            out: dict[str, Any] = {}
            for key, value in node.items():
                if not isinstance(key, str):
                    raise UserError(f"{show(path)}: key {key!r} is not a string; quote it")
                out[key] = walk(value, (*path, key))
            return out
        if isinstance(node, list | tuple):
            if not node:
                entries.append((path, "[]"))
            return [walk(value, (*path, i)) for i, value in enumerate(node)]
        kind, plain = _encode_leaf(node, path)
        nonce, sealed = gcm_encrypt(value_key, plain, _value_aad(path, kind))
        text = _render(sealed[:-TAG_BYTES], nonce, sealed[-TAG_BYTES:], kind)
        entries.append((path, text))
        return text

    body: dict[str, Any] = walk(data, ())
    body[META_KEY] = {
        "format": FORMAT,
        "recipients": [{"provider": p.id, "key": p.key_id, "wrapped": _b64(p.wrap(data_key, FILE_AAD))}
                       for p in recipients],
        "mac": _mac(mac_key, entries),
    }
    return body


def is_encrypted(doc: Mapping[str, Any]) -> bool:
    """Whether a loaded document is in the encrypted form."""
    return isinstance(doc.get(META_KEY), Mapping)


def _parse_enc(text: str, path: KeyPath) -> tuple[bytes, bytes, str]:
    """(nonce, ciphertext with tag, type) of one ENC[...] value; Tampered unless canonical."""
    match = _ENC.match(text)
    if match is None:
        raise Tampered(f"the value at {show(path)} is not encrypted: it was added or changed after encryption")
    try:
        data, nonce, tag = (base64.b64decode(match.group(i), validate=True) for i in (1, 2, 3))
    except binascii.Error:
        raise Tampered(f"the value at {show(path)} is not valid base64: it was changed") from None
    kind = match.group(4)
    if kind not in KINDS or len(nonce) != NONCE_BYTES or len(tag) != TAG_BYTES \
            or _render(data, nonce, tag, kind) != text:
        raise Tampered(f"the value at {show(path)} is not a well-formed encrypted value: it was changed")
    return nonce, data + tag, kind


def _recipient(meta: Mapping[str, Any], provider: KeyProvider) -> bytes:
    if meta.get("format") != FORMAT:
        raise Tampered(f"the {META_KEY} section's format is not {FORMAT}: it was changed, or a newer shipmate "
                       "wrote it")
    if set(meta) != {"format", "recipients", "mac"}:
        raise Tampered(f"the {META_KEY} section has other keys than format, recipients and mac: it was changed")
    recipients = meta.get("recipients")
    if not isinstance(recipients, list) or not recipients \
            or not all(isinstance(r, Mapping) and set(r) == {"provider", "key", "wrapped"} for r in recipients):
        raise Tampered(f"the {META_KEY} section's recipients are not a list of provider, key and wrapped: it was "
                       "changed")
    for entry in recipients:
        if entry.get("provider") == provider.id and entry.get("key") == provider.key_id:
            text = entry.get("wrapped")
            try:
                wrapped = base64.b64decode(str(text), validate=True)
            except binascii.Error:
                wrapped = b""
            if not wrapped or _b64(wrapped) != text:
                raise Tampered(f"the wrapped data key for {provider.id} key {provider.key_id} is not canonical "
                               "base64: it was changed")
            return wrapped
    listed = ", ".join(f"{r.get('provider')} key {r.get('key')}" for r in recipients) or "nobody"
    raise WrongKey(f"the file is encrypted for {listed}; not for {provider.id} key {provider.key_id}")


def decrypt_document(doc: Mapping[str, Any], provider: KeyProvider) -> dict[str, Any]:
    """The plaintext of an encrypted document, opened by `provider` (one of its recipients).
    Raises Tampered (Misplaced for a value moved between keys) or WrongKey; never returns a
    document that differs from the one encrypted."""
    if META_KEY not in doc:
        raise UserError(f"not an encrypted document: it has no {META_KEY} section")
    meta = doc[META_KEY]
    if not isinstance(meta, Mapping):
        raise Tampered(f"the {META_KEY} section is not readable: it was changed")
    wrapped = _recipient(meta, provider)
    try:
        data_key = provider.unwrap(wrapped, FILE_AAD)
    except Tampered as exc:
        raise Tampered(f"the file's data key does not unwrap ({exc})") from None
    value_key, mac_key = _keys(data_key)

    entries: list[tuple[KeyPath, str]] = []
    leaves: list[tuple[KeyPath, bytes, bytes, str]] = []

    def walk(node: Any, path: KeyPath) -> Any:
        if isinstance(node, Mapping):
            if not node:
                entries.append((path, "{}"))
            for key in node:
                if not isinstance(key, str):
                    raise Tampered(f"{show(path)}: key {key!r} is not a string: the file was changed")
            return {key: walk(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            if not node:
                entries.append((path, "[]"))
            return [walk(value, (*path, i)) for i, value in enumerate(node)]
        if not isinstance(node, str):
            raise Tampered(f"the value at {show(path)} is not encrypted: it was added or changed after encryption")
        nonce, sealed, kind = _parse_enc(node, path)
        entries.append((path, node))
        leaves.append((path, nonce, sealed, kind))
        return node

    body = walk({k: v for k, v in doc.items() if k != META_KEY}, ())
    plain: dict[KeyPath, Any] = {}
    for path, nonce, sealed, kind in leaves:
        try:
            plain[path] = _decode_leaf(kind, gcm_decrypt(value_key, nonce, sealed, _value_aad(path, kind)), path)
        except InvalidTag:
            _misplaced(path, nonce, sealed, kind, value_key, [p for p, *_ in leaves])
    mac = meta.get("mac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(mac_key, entries)):
        raise Tampered("the file's MAC does not match its keys and values: a value was changed, added, removed or "
                       "reordered (or the MAC itself was changed)")

    def fill(node: Any, path: KeyPath) -> Any:
        if isinstance(node, dict):
            return {key: fill(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value, (*path, i)) for i, value in enumerate(node)]
        return plain[path]

    result: dict[str, Any] = fill(body, ())
    return result


def _misplaced(path: KeyPath, nonce: bytes, sealed: bytes, kind: str, value_key: bytes,
               paths: list[KeyPath]) -> None:
    """Raise Misplaced naming the key a value was encrypted for, if that key is in the file; else Tampered."""
    for other in paths:
        if other == path:
            continue
        try:
            gcm_decrypt(value_key, nonce, sealed, _value_aad(other, kind))
        except InvalidTag:
            continue
        raise Misplaced(f"the value at {show(path)} was encrypted for {show(other)}: values cannot be moved "
                        "between keys")
    raise Tampered(f"the value at {show(path)} failed authentication: it was changed, moved from a key no longer "
                   "in the file, or encrypted with another data key")


# --- text forms ---------------------------------------------------------------------------

def format_of(filename: str) -> str:
    """yaml, json or dotenv, from a file name (`.yaml`/`.yml`, `.json`, `.env`, `.env.*`, `*.env`)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].lower()
    if name.endswith((".yaml", ".yml")):
        return "yaml"
    if name.endswith(".json"):
        return "json"
    if name == ".env" or name.startswith(".env.") or name.endswith(".env"):
        return "dotenv"
    raise UsageError(f"{filename}: cannot tell the format from the name; give it as yaml, json or dotenv")


def load(text: str | bytes, fmt: str, *, source: str = "<document>") -> dict[str, Any]:
    """Parse a YAML, JSON or .env document whose top level is a mapping; errors cite `source`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError(f"not UTF-8 text (byte {exc.start})", location=Location(source)) from None
    if fmt == "yaml":
        try:
            data = yaml.load(text, Loader=_LOADER)  # noqa: S506  (a safe loader, C or Python)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = Location(source, mark.line + 1, mark.column + 1) if mark is not None else Location(source)
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise SpecError(str(problem), location=where) from None
        data = {} if data is None else data
    elif fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(exc.msg, location=Location(source, exc.lineno, exc.colno)) from None
    elif fmt == "dotenv":
        data = _load_dotenv(text, source)
    else:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not isinstance(data, dict):
        raise SpecError("the top level must be a mapping of keys to values", location=Location(source))
    return data


def dump(data: Mapping[str, Any], fmt: str) -> str:
    """The text of a document in a format `load` reads back."""
    if fmt == "yaml":
        text = str(yaml.dump(dict(data), Dumper=_DUMPER, sort_keys=False, allow_unicode=True,
                             default_flow_style=False))
        if yaml.load(text, Loader=_LOADER) == data:  # noqa: S506
            return text
        # PyYAML writes some characters (NEL, U+0085) raw that its reader takes for line breaks: escape all
        return str(yaml.dump(dict(data), Dumper=_DUMPER, sort_keys=False, allow_unicode=False,
                             default_flow_style=False))
    if fmt == "json":
        try:
            return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        except TypeError as exc:
            raise UserError(f"cannot write this document as JSON: {exc}") from None
    if fmt == "dotenv":
        return _dump_dotenv(data)
    raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_ENV_RAW = re.compile(r"[A-Za-z0-9_./:@%+,=\-\[\]]*\Z")
_ENV_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def _load_dotenv(text: str, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip(" \t")
        key, sep, rest = line.partition("=")
        key = key.rstrip(" \t")
        where = Location(source, number, 1)
        if not sep or not _ENV_KEY.match(key):
            raise SpecError("expected KEY=VALUE", location=where)
        rest = rest.lstrip(" \t")
        if rest.startswith("'"):
            end = rest.find("'", 1)
            if end < 0:
                raise SpecError(f"{key}: the single quote is not closed on this line", location=where)
            value, tail = rest[1:end], rest[end + 1:]
        elif rest.startswith('"'):
            value, tail = _double_quoted(rest, key, where)
        else:
            value, tail = re.split(r"[ \t]#", rest, maxsplit=1)[0].rstrip(" \t"), ""
        tail = tail.strip(" \t")
        if tail and not tail.startswith("#"):
            raise SpecError(f"{key}: unexpected text after the closing quote", location=where)
        if key in out:
            raise SpecError(f"{key} is set twice", location=where)
        out[key] = _meta_from_line(value) if key == META_KEY else value
    return out


def _double_quoted(rest: str, key: str, where: Location) -> tuple[str, str]:
    chars: list[str] = []
    i = 1
    while i < len(rest):
        char = rest[i]
        if char == "\\" and i + 1 < len(rest):
            chars.append(_ENV_ESCAPES.get(rest[i + 1], "\\" + rest[i + 1]))
            i += 2
            continue
        if char == '"':
            return "".join(chars), rest[i + 1:]
        chars.append(char)
        i += 1
    raise SpecError(f"{key}: the double quote is not closed on this line", location=where)


def _meta_line(meta: Mapping[str, Any]) -> str:
    encoded = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(encoded).decode("ascii").rstrip("=")


def _meta_from_line(value: str) -> Any:
    """The `_shipmate` section of a .env file; left as text (which decrypt_document reports as
    changed) unless it is exactly the canonical line `_meta_line` writes."""
    try:
        meta = json.loads(base64.urlsafe_b64decode(value.encode("ascii") + b"=" * (-len(value) % 4)))
    except (ValueError, binascii.Error):
        return value
    return meta if isinstance(meta, dict) and _meta_line(meta) == value else value


def _dump_dotenv(data: Mapping[str, Any]) -> str:
    lines: list[str] = []
    for key, value in data.items():
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            raise UserError(f"{key!r} is not a valid .env variable name")
        if key == META_KEY and isinstance(value, Mapping):
            lines.append(f"{key}={_meta_line(value)}")
            continue
        if not isinstance(value, str):
            raise UserError(f"{key}: a .env file holds text values only (got {type(value).__name__})")
        lines.append(f"{key}={_dotenv_value(value)}")
    return "".join(line + "\n" for line in lines)


def _dotenv_value(value: str) -> str:
    if _ENV_RAW.match(value):
        return value
    if "'" not in value and "\n" not in value and "\r" not in value:
        return f"'{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") \
        .replace("\t", "\\t").replace("$", "\\$")
    return f'"{escaped}"'
