"""Secret detection (`shipmate.policy.leaks`): every token format, placeholders and references,
secret names, masking, and that no secret of the labelled corpus reaches any report format.

Every credential here is made up: format-valid for its detector, issued by nobody.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipmate.policy import leaks
from shipmate.policy.models import Resource, Severity
from shipmate.policy.report import to_json, to_junit, to_sarif, to_text
from tests.unit.corpus_support import scanned

# One sample per format of leaks.TOKEN_PATTERNS (all invented).
TOKENS = {
    "private key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Zq3\n-----END RSA PRIVATE KEY-----",
    "AWS access key id": "AKIAVMCP7JYWVTXJDE3V",
    "GitHub token": "ghp_V0BklRAFXxBhpSYdcuWkYz8DlT3xspRXW50b",
    "GitLab token": "glpat-QQkdIGLi1-pebejABPiq",
    "Slack token": "xoxb-960907157875-4918117953240-QdqVNUHQgYnzSY24iAi6mAf6",
    "Slack webhook": "https://hooks.slack.com/services/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",
    "Stripe key": "sk_live_X3gFz0hEh4fR5a8fiFUnkbcl",
    "Google API key": "AIzapMXY-C5wP6-fbNdcT301cm5Jcnp7jogvWPM",
    "OpenAI-style API key": "sk-proj-oA4LwdMvXF6El2EnrW0wT1C6YdGfr9RohEGoY8OdqN2hbGel",
    "SendGrid key": "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",
    "Twilio key": "SK3ace5318b7ce64ee19655e2ecf50d2b6",
    "npm token": "npm_Os5Rq5RjGjP06cV2qaMi535xLNUCEqr0ydOX",
    "Azure storage key": "DefaultEndpointsProtocol=https;AccountName=acmemedia;AccountKey=HiCmvvecJZzgjCw+DxVN4nXmF"
                         "q7heSk1svq9WreC5FwsQdf7jbsPRdrhG8PsVqDk3m9GYTPcotdLH6dKB80/j8==;EndpointSuffix=core.windows.net",
    "JSON Web Token": "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJzdWIiOiAic3ZjLWJpbGxpbmciLCAiaXNzIjogImF1dGguYWNtZS"
                      "5leGFtcGxlIiwgImV4cCI6IDE5MjQ5OTIwMDB9.oY0MsdfZEDf2fv3ajnO-aJ_GwirKNuXFfM4RvTmEDKK",
}

MORE_TOKENS = [
    ("AWS access key id", "ASIAX67OXBE53D0Y8K82"),
    ("GitHub token", "gho_SDy22DZ6YY773vx10G19EwmfIvaWrvDYKGJ6"),
    ("GitHub token", "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"),
    ("Stripe key", "rk_live_8pAdbYmGzoEcQC4jUfrnVOSj"),
    ("OpenAI-style API key", "sk-ant-xtLwnprm3uK1XDbX3VogXVPyMiXwzW1BnUUwaOtS"),
    ("private key", "-----BEGIN OPENSSH PRIVATE KEY-----"),
    ("private key", "-----BEGIN PGP PRIVATE KEY BLOCK-----"),
    ("private key", "-----BEGIN ENCRYPTED PRIVATE KEY-----"),
]

# Shapes close to a token format that are not secrets of that format.
NOT_TOKENS = [
    "AKIAVMCP7JYWVTXJDE3",  # 15 characters after AKIA
    "ghp_tooShort123",
    "sk_test_X3gFz0hEh4fR5a8fiFUnkbcl",  # Stripe test mode
    "pk_live_X3gFz0hEh4fR5a8fiFUnkbcl",  # Stripe publishable key
    "eyJhbGciOiJIUzI1NiJ9",  # a JWT header alone
    "-----BEGIN PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----",
    "https://hooks.slack.com/services/",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "2edf091a9f958d4f40826aabe8cfb8b99d1a9f41",  # a git commit
    "https://api.acme.example/v1/accounts",
    "postgres://accounts@db:5432/accounts",
]

PLACEHOLDERS = [
    "", "   ", "changeme", "CHANGE_ME", "change-it", "REPLACE_ME", "replaceme", "TODO", "tbd", "null", "none",
    "dummy", "example", "placeholder", "secret", "password", "redacted", "<redacted>", "<your-client-secret>",
    "xxxx", "********", "...", "true", "no", "${DB_PASSWORD}", "${DB_PASSWORD:-}", "$(DB_PASSWORD)",
    "$(cat /run/secrets/x)", "$DB_PASSWORD", "{{ .Values.db.password }}", "%(password)s",
    "vault:secret/data/x#y", "ref+vault://secret/x#y", "secretref:db", "awssm:prod/db", "gcpsm:db", "azurekv:db",
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf", "arn:aws:ssm:eu-west-1:1:parameter/db",
    "projects/acme/secrets/db/versions/latest", "your-api-key-here", "my-secret", "insert_token", "api-key-here",
    "DB_PASSWORD_VALUE", "/run/secrets/db/password", "./secrets/db", "file:///run/secrets/db", "3600", "1.5",
    "aaaaaaaa", "http://localhost:8200/v1/secret", "postgres://app@db:5432/app?sslmode=require",
    "redis://cache:6379/0", "jdbc:postgresql://db:5432/app",
]

# Literal values that are secrets when stored under a secret name.
LITERALS = ["hunter2-prod", "Winter2024!", "admin123", "S3cr3t-Dump-Pw", "correct horse battery staple",
            "postgres://app:Sup3rS3cret@db/app", "https://db/app?password=Sup3rS3cret",
            "https://api.acme.example/hook/Zq8rW2mX9vK4tL7pN3sB6yC1"]


@pytest.mark.parametrize("kind", sorted(TOKENS))
def test_each_token_format_is_found_alone_and_inside_text(kind: str) -> None:
    value = TOKENS[kind]
    found = leaks.find_token(value)
    assert found is not None
    assert found.kind == kind
    inside = leaks.find_token(f'config: {{"x": 1, "credential": "{value}"}} # pasted by mistake')
    assert inside is not None
    assert inside.kind == kind
    assert value not in found.masked


def test_every_token_format_has_a_sample() -> None:
    assert set(TOKENS) == {name for name, _ in leaks.TOKEN_PATTERNS}


@pytest.mark.parametrize(("kind", "value"), MORE_TOKENS)
def test_token_variants(kind: str, value: str) -> None:
    found = leaks.find_token(value)
    assert found is not None
    assert found.kind == kind


@pytest.mark.parametrize("value", NOT_TOKENS)
def test_lookalikes_are_not_tokens(value: str) -> None:
    assert leaks.find_token(value) is None


@pytest.mark.parametrize(("value", "password"), [
    ("postgres://app:Sup3rS3cretPw@db:5432/app", "Sup3rS3cretPw"),
    ("redis://:p4ssw0rd-cache-01@cache:6379/0", "p4ssw0rd-cache-01"),
    ("amqp://guest:Rabb1t-Pw-2024@rabbitmq:5672/", "Rabb1t-Pw-2024"),
    ("see https://deploy:gh-Pat-123456@git.acme.example/repo.git for the mirror", "gh-Pat-123456"),
])
def test_urls_with_passwords(value: str, password: str) -> None:
    found = leaks.find_token(value)
    assert found is not None
    assert found.kind == "URL with a password"
    assert found.masked == leaks.mask(password)


@pytest.mark.parametrize("value", [
    "postgres://app@db:5432/app",
    "postgres://app:${DB_PASSWORD}@db:5432/app",
    "redis://:$(REDIS_PASSWORD)@cache:6379",
    "amqp://guest:changeme@rabbitmq:5672/",
    "https://db.internal:5432/app",
    "http://user@host/path",
])
def test_urls_without_passwords(value: str) -> None:
    assert leaks.find_token(value) is None


@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_placeholders_and_references_are_not_secrets(value: str) -> None:
    assert leaks.is_placeholder(value)
    assert leaks.find_in_value("DB_PASSWORD", value) is None


@pytest.mark.parametrize("value", LITERALS)
def test_literals_under_secret_names_are_secrets(value: str) -> None:
    assert not leaks.is_placeholder(value)
    assert leaks.find_in_value("DB_PASSWORD", value) is not None
    assert leaks.find_in_value("LOG_LEVEL", "debug") is None


@pytest.mark.parametrize(("name", "secret"), [
    ("DB_PASSWORD", True), ("db-password", True), ("PGPASSWORD", True), ("API_KEY", True), ("apiKey", True),
    ("CLIENT_SECRET", True), ("SESSION_SECRET", True), ("GITHUB_TOKEN", True), ("PRIVATE_KEY", True),
    ("DATABASE_URL", True), ("SENTRY_DSN", True), ("JWT_SIGNING_KEY", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("PASSWORD_FILE", False), ("TOKEN_TTL", False), ("JWT_SECRET_NAME", False), ("SECRET_NAME", False),
    ("token_ref", False), ("AUTH_TOKEN_HEADER", False), ("PASSWORD_MIN_LENGTH", False), ("JWT_ISSUER", False),
    ("JWT_PUBLIC_KEY", False), ("password_file", False), ("password-file", False), ("api-key-header", False),
    ("jwt-issuer", False), ("client-secret-file", False), ("AWS_ACCESS_KEY_ID", False), ("LOG_LEVEL", False),
    ("REDIS_URL", False), ("OAUTH_CLIENT_ID", False), ("secret_store", False),
    ("secretKeyRef", False), ("passwordFile", False), ("existingSecretName", False), ("tokenTTL", False),
    ("basicAuthPassword", True), ("clientSecret", True),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert leaks.is_secret_name(name) is secret


@pytest.mark.parametrize(("text", "found"), [
    ("spring.datasource.password=Pr0dPassw0rd!\nserver.port=8080\n", True),
    ('{\n  "apiKey": "5Htlf688NPXPXZQdZ1yXDIVLiIzgACjm"\n}\n', True),
    ("[default]\naws_secret_access_key = 7f2uD4kfm+CJ+VzbOrpxZaoBNWAcE58GW4Kmajy7\n", True),
    ("db:\n  password: ${DB_PASSWORD}\n  token_ttl: 3600\n", False),
    ("[database]\npassword = changeme\npassword_file = /run/secrets/db\n", False),
    ("server {\n  proxy_set_header X-Api-Key $http_x_api_key;\n}\n", False),
    ("upstream:\n  token:\n    fromEnv: INGEST_TOKEN\n", False),
    ("upstream:\n  token:\n  other: Zq8rW2mX9vK4tL7p\n  token: Zq8rW2mX9vK4tL7p\n", True),
])
def test_find_in_text(text: str, found: bool) -> None:
    assert (leaks.find_in_text(text) is not None) is found


def test_random_looking_values() -> None:
    assert leaks.looks_random("qM7wJmPrHfyNGzzJQptdZ8L2iPluxF7jjAfdHKV5")
    assert leaks.looks_random("b5d9cdbf158ba5779f4d11ca6a1d5ea18135ad7d0be87f31c25edb1116351b46")
    assert not leaks.looks_random("short1A")
    assert not leaks.looks_random("correct horse battery staple")
    assert not leaks.looks_random("aaaaaaaaaaaaaaaaaaaaaaaa")
    assert leaks.entropy("") == 0.0
    assert leaks.entropy("abcd") == pytest.approx(2.0)


# --- masking ------------------------------------------------------------------------------

def _revealed(value: str, masked: str) -> int:
    """How many characters of `value` the masked form shows: the fewest over every way of reading
    it as <prefix of value>…<suffix of value> (n chars). Fails when it cannot be read so."""
    suffix = f" ({len(value)} chars)"
    assert masked.endswith(suffix), masked
    body = masked[: -len(suffix)]
    readings = [
        len(head) + len(tail)
        for i in range(len(body)) if body[i] == "…"
        for head, tail in [(body[:i], body[i + 1:])]
        if value.startswith(head) and value.endswith(tail) and len(head) + len(tail) <= len(value)
    ]
    assert readings, f"{masked!r} is not a masked form of a {len(value)}-character value"
    return min(readings)


@given(st.text(max_size=200))
def test_mask_never_shows_more_than_four_characters(value: str) -> None:
    masked = leaks.mask(value)
    assert _revealed(value, masked) <= 4
    if len(value) >= 5:
        assert value not in masked.removesuffix(f" ({len(value)} chars)")


@given(st.text(min_size=1, max_size=120), st.text(min_size=1, max_size=120))
def test_mask_depends_only_on_the_ends_and_the_length(a: str, b: str) -> None:
    """Two values of the same length with the same two first and two last characters mask the
    same: nothing from the middle gets out."""
    n = max(len(a), len(b), 5)
    middle = (b * n)[: n - 4]
    value = (a * n)[:n]
    other = value[:2] + middle + value[-2:]
    assert len(other) == len(value)
    assert leaks.mask(value) == leaks.mask(other)


# --- no secret of the corpus in any report ------------------------------------------------

_ASSIGNED = re.compile(r"(?im)^\s*[\"']?([\w.-]+)[\"']?[ \t]*[:=][ \t]*[\"']?([^\s\"',#]+)")


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _at(obj: Any, path: str) -> Any:
    """The value at a finding's path (`a.b[0].c`; map keys may hold dots, e.g. data.app.properties)."""
    node = obj
    rest = path
    while rest:
        if rest.startswith("["):
            index, _, rest = rest[1:].partition("]")
            node = node[int(index)]
            rest = rest.removeprefix(".")
            continue
        parts = re.split(r"(?=[.\[])", rest)
        for size in range(len(parts), 0, -1):
            key = "".join(parts[:size])
            if isinstance(node, dict) and key in node:
                node = node[key]
                rest = "".join(parts[size:]).removeprefix(".")
                break
        else:
            raise KeyError(f"{path}: no {rest!r}")
    return node


def _secrets_in(text: str) -> set[str]:
    """The secret-looking parts of a value: token matches, URL passwords, literals assigned to (or
    following) a secret name and, for a one-line value, the value itself."""
    found = {m.group(0) for _, pattern in leaks.TOKEN_PATTERNS for m in pattern.finditer(text)}
    found |= {m.group(2) for m in re.finditer(r"://([^\s:/@]*):([^\s@/]+)@", text)}
    found |= {m.group(2) for m in _ASSIGNED.finditer(text) if leaks.is_secret_name(m.group(1))}
    words = text.split()
    found |= {nxt for word, nxt in itertools.pairwise(words)
              if word.startswith("-") and leaks.is_secret_name(word.lstrip("-"))}
    if "\n" not in text.strip():
        found.add(text.strip())
    return {s for s in found if len(s) >= 8 and not leaks.is_placeholder(s)}


def _decoded(value: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return value


def _corpus_secrets(resource: Resource, paths: set[str]) -> set[str]:
    out: set[str] = set()
    if resource.kind == "Secret":
        for key, value in {**(resource.obj.get("data") or {}), **(resource.obj.get("stringData") or {})}.items():
            plain = _decoded(str(value)) if key in (resource.obj.get("data") or {}) else str(value)
            if leaks.is_secret_name(str(key)) or leaks.find_token(plain) is not None:
                out |= {str(value), plain} | _secrets_in(plain)
    for path in paths:
        for text in _strings(_at(resource.obj, path)):
            out |= _secrets_in(text)
    return {s for s in out if len(s) >= 8}


def test_no_secret_of_the_corpus_appears_in_any_report() -> None:
    checked: dict[str, set[str]] = {}
    for corpus_file in scanned():
        result = corpus_file.result
        secret_paths: dict[str, set[str]] = {}
        for f in result.findings:
            if f.rule in ("SM701", "SM702", "SM703", "SM704", "SM706") and f.path not in ("data", "stringData"):
                secret_paths.setdefault(f.resource, set()).add(f.path)
        values: set[str] = set()
        for resource in corpus_file.inputs.resources:
            if resource.kind == "Secret" or resource.ref in secret_paths:
                values |= _corpus_secrets(resource, secret_paths.get(resource.ref, set()))
        if not values:
            continue
        junit = to_junit(result, Severity.MEDIUM)
        reports = {
            "text": to_text(result, Severity.HIGH, color=False),
            "text (terminal)": to_text(result, Severity.HIGH, color=True),
            "json": to_json(result, Severity.HIGH),
            "sarif": to_sarif(result, Severity.LOW),
            "junit": junit,
        }
        # also as a reader sees them: JSON unescaped, XML parsed (escaping must not hide a leak)
        for name in ("json", "sarif"):
            reports[f"{name} (decoded)"] = json.dumps(json.loads(reports[name]), ensure_ascii=False)
        reports["junit (parsed)"] = "\n".join(
            part for element in ET.fromstring(junit).iter()  # noqa: S314 - our own output
            for part in (element.text or "", *element.attrib.values()))
        for name, report in reports.items():
            leaked = sorted(v for v in values if v in report)
            assert not leaked, f"{corpus_file.path.name}: the {name} report shows {leaked}"
            if name not in ("json", "sarif"):  # the raw JSON spells it \u2026
                assert "…" in report, f"{corpus_file.path.name}: the {name} report shows no masked evidence"
        checked[corpus_file.path.name] = values
    every = set().union(*checked.values())
    # the check is only as good as what it looks for: the corpus' secrets must be in the set
    assert {"AKIAVMCP7JYWVTXJDE3V", "Winter2024!", "hunter2-legacy", "Pr0dPassw0rd!", "Dump-S3cr3t-2024",
            "Pr0d-ledger-Passw0rd", "Sup3rS3cretPw", "p4ssw0rd-cache-01", "s3cr3t-prom-Reader",
            "Gr8-Upstream-Pw", TOKENS["Slack token"], TOKENS["JSON Web Token"]} <= every
    assert len(every) >= 40
    assert {"secrets.yaml", "mixed-real-world.yaml"} <= checked.keys()
