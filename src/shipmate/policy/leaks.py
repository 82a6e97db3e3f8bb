"""Secret detection in literal values: known token formats, key-name context with entropy,
and an allowlist for placeholders and references. Found values are only ever shown masked.

Called by the scanner's secret rules (and later by the secret-scan drill). Pure.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

# name, pattern. Each pattern matches a secret by its own shape, whatever key it is under.
TOKEN_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(p)) for name, p in (
    ("private key", r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"),
    ("AWS access key id", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b"),
    ("GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b"),
    ("GitLab token", r"\bglpat-[A-Za-z0-9_-]{20,}\b"),
    ("Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    ("Slack webhook", r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"),
    ("Stripe key", r"\b(?:sk|rk)_live_[0-9A-Za-z]{20,}\b"),
    ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("OpenAI-style API key", r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{32,}\b"),
    ("SendGrid key", r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b"),
    ("Twilio key", r"\bSK[0-9a-f]{32}\b"),
    ("npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("Azure storage key", r"AccountKey=[A-Za-z0-9+/=]{80,}"),
    ("JSON Web Token", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
))

# user:password@ in a URL; the user may be empty (redis://:password@host).
_URL_PASSWORD = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://([^\s:/@]*):([^\s@/]+)@[^\s]+")
# A whole value that is a URL (jdbc:postgresql://... too): authority, then path, query and fragment.
_URL = re.compile(r"(?i)^[a-z][a-z0-9+.-]*(?::[a-z][a-z0-9+.-]*)?://([^/?#\s]*)([^?#\s]*)(?:\?([^#\s]*))?(?:#\S*)?$")
# key = value or key: value, the value on the same line (`token:` opening a nested block is not one)
_ASSIGNMENT = re.compile(
    r"(?im)^\s*[\"']?([A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|private[_-]?key"
    r"|client[_-]?secret|access[_-]?key)[A-Za-z0-9_.-]*)[\"']?[ \t]*[:=][ \t]*[\"']?([^\s\"',#]+)"
)
SECRET_NAME = re.compile(
    r"(?i)(pass(word|wd|phrase)?|pwd|secret|token|api[_-]?key|apikey|private[_-]?key|credential|"
    r"access[_-]?key|client[_-]?secret|signing[_-]?key|encryption[_-]?key|auth[_-]?key|dsn|"
    r"conn(ection)?[_-]?str(ing)?|database[_-]?url|db[_-]?url|jwt)"
)
# Suffixes of names that point at, describe or configure a secret (or hold a public key), with
# `_` (environment variables) or `-` (command-line flags) before them.
_NOT_A_SECRET_NAME = re.compile(
    r"(?i)[_-](file|path|dir|name|names|id|ids|enabled|ttl|expiry|expiration|length|timeout|ref|"
    r"version|header|type|mode|policy|kind|field|key[_-]name|secret[_-]name|store|provider|mount|"
    r"rotation|interval|days|seconds|issuer|audience|algorithm|url[_-]file|endpoint|region|"
    r"public[_-]?key|pubkey|certificate|cert)$|"
    r"^(secret|token)s?[_-]?(name|ref|path)$"
)
_PLACEHOLDER = re.compile(
    r"(?i)^(|changeme|change[-_]?me|change[-_]?it|replace[-_]?me|todo|tbd|none|null|nil|empty|default|dummy|"
    r"example|sample|placeholder|secret|password|passw0rd|redacted|hidden|masked|notset|not[-_]set|unset|"
    r"test|xxx+|\*+|\.\.\.+|-+|true|false|yes|no|on|off)$"
)
_REFERENCE = re.compile(
    r"(?i)^(\$\{[^}]*\}|\$\([^)]*\)|\{\{.*\}\}|<[^>]*>|%\([^)]*\)s|ref\+.*|vault:.*|secretref:.*|"
    r"arn:aws:(secretsmanager|ssm|kms):.*|projects/[^/]+/secrets/.*|awssm:.*|gcpsm:.*|azurekv:.*|"
    r"(your|my|insert|enter|put)[-_ ].*|.*[-_](here|placeholder)|https?://(localhost|127\.0\.0\.1)[:/].*)$"
)


@dataclass(frozen=True)
class Leak:
    """A secret found in a value: what it looks like and a masked sample."""

    kind: str
    masked: str


def mask(value: str) -> str:
    """A masked form that never shows more than a few characters: `AK…LE (20 chars)`."""
    n = len(value)
    if n >= 16:
        return f"{value[:2]}…{value[-2:]} ({n} chars)"
    if n >= 8:
        return f"{value[:1]}… ({n} chars)"
    return f"… ({n} chars)"


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    if not value:
        return 0.0
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def is_placeholder(value: str) -> bool:
    """A value that stands for a secret without being one: empty, `changeme`, `${VAR}`, `$(cat f)`,
    `<redacted>`, `API_KEY_VALUE`, a reference to a secret store, a file path, a URL without a
    password, a number or a boolean."""
    text = value.strip().strip("\"'")
    if _PLACEHOLDER.match(text) or _REFERENCE.match(text):
        return True
    if text.startswith("$") or re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", text):
        return True  # a shell or template reference, or a NAME_LIKE_THIS stand-in
    if text.startswith("/") or text.startswith("./") or text.startswith("file:"):
        return True
    if re.fullmatch(r"[0-9.\-_:]+", text):
        return True
    if _plain_url(text):
        return True  # where the secret is used, not the secret: postgres://app@db:5432/app
    return bool(re.fullmatch(r"(.)\1{3,}", text))


def _plain_url(text: str) -> bool:
    """A URL with no secret in it: no `user:password@`, no random-looking user or path segment
    (a token as user name, a capability URL), no secret-named query parameter with a literal value."""
    match = _URL.match(text)
    if match is None:
        return False
    userinfo = match.group(1).rpartition("@")[0]
    if (":" in userinfo and userinfo.partition(":")[2]) or _looks_random(userinfo):
        return False
    if any(_looks_random(segment) for segment in match.group(2).split("/")):
        return False
    for pair in (match.group(3) or "").split("&"):
        name, _, value = pair.partition("=")
        if value and is_secret_name(name) and not is_placeholder(value):
            return False
    return True


def is_secret_name(name: str) -> bool:
    """A key or variable name that says it holds a secret (PASSWORD, API_KEY, db-url, ...),
    and not one that only names or points at a secret (SECRET_NAME, TOKEN_FILE, secretKeyRef, ...)."""
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # passwordFile reads as password_File
    return bool(SECRET_NAME.search(name)) and not _NOT_A_SECRET_NAME.search(snake)


def _looks_random(value: str) -> bool:
    text = value.strip()
    if len(text) < 16 or " " in text:
        return False
    if re.fullmatch(r"[0-9a-fA-F]+", text):
        return entropy(text) >= 3.0
    return entropy(text) >= 3.5 and bool(re.search(r"[0-9]", text)) and bool(re.search(r"[A-Za-z]", text))


def find_token(value: str) -> Leak | None:
    """A known token format or a URL with a password in it, anywhere in `value`."""
    for name, pattern in TOKEN_PATTERNS:
        match = pattern.search(value)
        if match:
            return Leak(name, mask(match.group(0)))
    for match in _URL_PASSWORD.finditer(value):
        password = match.group(2)
        if not is_placeholder(password) and not password.startswith("$"):
            return Leak("URL with a password", mask(password))
    return None


def find_in_value(name: str, value: str) -> Leak | None:
    """A secret in the literal `value` stored under `name`: a token format anywhere, or, when the
    name says secret, any literal that is not a placeholder; or a random-looking string."""
    token = find_token(value)
    if token is not None:
        return token
    if is_placeholder(value):
        return None
    if is_secret_name(name) and len(value.strip()) >= 4:
        return Leak(f"literal value under a secret name ({name})", mask(value.strip()))
    return None


def find_in_text(text: str) -> Leak | None:
    """A secret in a whole file's content (a ConfigMap file, a command line): token formats,
    URLs with passwords, and `password = ...` style assignments of literal values."""
    token = find_token(text)
    if token is not None:
        return token
    for match in _ASSIGNMENT.finditer(text):
        key, value = match.group(1), match.group(2)
        if is_secret_name(key) and not is_placeholder(value) and len(value) >= 4:
            return Leak(f"assignment to {key}", mask(value))
    return None


def looks_random(value: str) -> bool:
    """A long, high-entropy string (used with key-name context only, never alone)."""
    return _looks_random(value)
