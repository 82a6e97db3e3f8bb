"""The git-storable secrets file form (shipmate.secrets.fileform): round trips over nested YAML and
JSON documents and .env files, readable keys, every single-byte change caught, values moved between
keys refused with both key paths named, the MAC catching removed, added and reordered values, and
several recipients per file."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipmate.errors import ShipmateError, SpecError, UsageError, UserError
from shipmate.secrets import fileform
from shipmate.secrets.crypto import Misplaced, Tampered, WrongKey
from shipmate.secrets.fileform import decrypt_document, dump, encrypt_document, load
from tests.unit.test_secrets_crypto import MemoryKeyProvider

PROVIDER = MemoryKeyProvider("ring-a")

DOC: dict[str, Any] = {
    "db": {"password": "hunter2-secret", "port": 5432, "ratio": 0.25, "tls": True, "ca": None},
    "users": [{"name": "ada", "token": "tok-ada-secret"}, {"name": "bob", "token": "tok-bob-secret"}],
    "empty": {},
    "none": [],
    "weird key.with dots": "x",
}
SECRETS = ("hunter2-secret", "tok-ada-secret", "tok-bob-secret")


def encrypted(doc: dict[str, Any] | None = None) -> dict[str, Any]:
    return encrypt_document(copy.deepcopy(DOC if doc is None else doc), [PROVIDER])


# --- round trips --------------------------------------------------------------------------

text_keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).filter(lambda k: k != "_shipmate")
leaves = (st.text(st.characters(blacklist_categories=("Cs",)), max_size=30) | st.integers()
          | st.floats(allow_nan=False) | st.booleans() | st.none())
documents = st.dictionaries(text_keys, st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text_keys, inner, max_size=4),
    max_leaves=20), max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, fmt=st.sampled_from(["yaml", "json"]))
def test_round_trip_of_nested_documents(doc: dict[str, Any], fmt: str) -> None:
    text = dump(encrypt_document(doc, [PROVIDER]), fmt)
    assert decrypt_document(load(text, fmt), PROVIDER) == doc


env_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True).filter(lambda k: k != "_shipmate")


@settings(max_examples=150, deadline=None)
@given(env=st.dictionaries(env_keys, st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), max_size=8))
def test_round_trip_of_dotenv_files(env: dict[str, str]) -> None:
    assert load(dump(env, "dotenv"), "dotenv") == env
    text = dump(encrypt_document(env, [PROVIDER]), "dotenv")
    assert decrypt_document(load(text, "dotenv"), PROVIDER) == env


def test_yaml_only_types_survive() -> None:
    doc = {"blob": b"\x00\xff", "day": dt.date(2024, 2, 29),
           "at": dt.datetime(2024, 2, 29, 12, 30, 1, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5)))}
    text = dump(encrypt_document(doc, [PROVIDER]), "yaml")
    assert decrypt_document(load(text, "yaml"), PROVIDER) == doc


def test_keys_stay_readable_and_every_leaf_is_encrypted() -> None:
    doc = encrypted()
    text = dump(doc, "yaml")
    for secret in SECRETS:
        assert secret not in text
    assert list(doc) == [*DOC, "_shipmate"]
    assert list(doc["db"]) == ["password", "port", "ratio", "tls", "ca"]
    assert doc["db"]["port"].startswith("ENC[AES256_GCM,data:")
    assert doc["db"]["port"].endswith(",type:int]")
    assert doc["db"]["ca"].endswith(",type:null]")
    assert doc["users"][1]["name"].startswith("ENC[")
    assert (doc["empty"], doc["none"]) == ({}, [])
    meta = doc["_shipmate"]
    assert meta["format"] == "shipmate-file/1"
    assert meta["mac"].startswith("hmac-sha256:")
    assert [(r["provider"], r["key"]) for r in meta["recipients"]] == [("memory", "ring-a")]
    assert load(text, "yaml")["db"]["password"] == doc["db"]["password"]


def test_each_encryption_uses_a_new_data_key_and_nonces() -> None:
    one, two = encrypted(), encrypted()
    assert one["db"]["password"] != two["db"]["password"]
    assert one["_shipmate"]["recipients"][0]["wrapped"] != two["_shipmate"]["recipients"][0]["wrapped"]


# --- tampering ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["yaml", "json", "dotenv"])
def test_every_single_byte_change_is_caught(fmt: str) -> None:
    """A changed byte either raises a named error or, where it changed nothing that matters (YAML
    whitespace), decrypts to exactly the original: never to other data."""
    plain = DOC if fmt != "dotenv" else {"DB_PASSWORD": SECRETS[0], "TOKEN": SECRETS[1], "EMPTY": ""}
    original = dump(encrypt_document(copy.deepcopy(plain), [PROVIDER]), fmt).encode()
    messages: list[str] = []
    for i in range(len(original)):
        for mask in (0x01, 0x04, 0x40):
            changed = bytearray(original)
            changed[i] ^= mask
            try:
                result = decrypt_document(load(bytes(changed), fmt), PROVIDER)
            except ShipmateError as exc:
                messages.append(str(exc))
            else:
                assert result == plain, f"byte {i} ^ {mask:#x} gave other data"
    assert not [m for m in messages if any(secret in m for secret in SECRETS)]
    raised = len(messages)
    if fmt != "yaml":
        assert raised == 3 * len(original), "in JSON and .env every byte matters"
    else:
        assert raised > 2.9 * len(original)


def test_a_value_moved_to_another_key_is_refused_and_named() -> None:
    doc = encrypted()
    doc["db"]["password"], doc["users"][0]["token"] = doc["users"][0]["token"], doc["db"]["password"]
    with pytest.raises(Misplaced, match=r"the value at db\.password was encrypted for users\[0\]\.token"):
        decrypt_document(doc, PROVIDER)


def test_list_elements_swapped_are_refused() -> None:
    doc = encrypted()
    doc["users"].reverse()
    with pytest.raises(Misplaced, match=r"users\[0\]\.name was encrypted for users\[1\]\.name"):
        decrypt_document(doc, PROVIDER)


def test_a_value_copied_under_a_new_key_is_refused() -> None:
    doc = encrypted()
    doc["db"]["extra"] = doc["db"]["password"]
    with pytest.raises(Misplaced, match=r"db\.extra was encrypted for db\.password"):
        decrypt_document(doc, PROVIDER)


def test_a_renamed_key_is_refused() -> None:
    doc = encrypted()
    doc["db"] = {("passwd" if k == "password" else k): v for k, v in doc["db"].items()}
    with pytest.raises(Tampered, match=r"the value at db\.passwd failed authentication"):
        decrypt_document(doc, PROVIDER)


@pytest.mark.parametrize("change", ["remove", "reorder", "remove-empty", "add-empty"])
def test_the_mac_catches_what_each_value_alone_does_not(change: str) -> None:
    doc = encrypted()
    if change == "remove":
        del doc["db"]["tls"]
    elif change == "reorder":
        doc["db"] = dict(reversed(list(doc["db"].items())))
    elif change == "remove-empty":
        del doc["empty"]
    else:
        doc["db"]["more"] = {}
    with pytest.raises(Tampered, match="the file's MAC does not match"):
        decrypt_document(doc, PROVIDER)


def test_a_plaintext_value_added_is_refused() -> None:
    doc = encrypted()
    doc["db"]["host"] = "db.internal"
    with pytest.raises(Tampered, match=r"the value at db\.host is not encrypted"):
        decrypt_document(doc, PROVIDER)


def test_a_changed_type_tag_is_refused() -> None:
    doc = encrypted()
    doc["db"]["port"] = doc["db"]["port"].replace("type:int", "type:str")
    with pytest.raises(Tampered, match=r"db\.port failed authentication"):
        decrypt_document(doc, PROVIDER)


def test_a_changed_section_is_refused() -> None:
    doc = encrypted()
    mac = doc["_shipmate"]["mac"]
    doc["_shipmate"]["mac"] = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    with pytest.raises(Tampered, match="MAC"):
        decrypt_document(doc, PROVIDER)
    doc = encrypted()
    doc["_shipmate"]["note"] = "added"
    with pytest.raises(Tampered, match="other keys than format, recipients and mac"):
        decrypt_document(doc, PROVIDER)


# --- recipients ---------------------------------------------------------------------------

def test_several_recipients_each_open_the_file() -> None:
    other = MemoryKeyProvider("ring-b")
    doc = encrypt_document(copy.deepcopy(DOC), [PROVIDER, other])
    assert decrypt_document(doc, PROVIDER) == DOC
    assert decrypt_document(doc, other) == DOC
    with pytest.raises(WrongKey, match="encrypted for memory key ring-a, memory key ring-b; not for memory key "
                                       "ring-c"):
        decrypt_document(doc, MemoryKeyProvider("ring-c"))
    with pytest.raises(Tampered, match="the file's data key does not unwrap"):
        decrypt_document(doc, MemoryKeyProvider("ring-a"))  # same name, other key material


def test_refusals_when_encrypting() -> None:
    with pytest.raises(UsageError, match="at least one recipient"):
        encrypt_document({"a": "b"}, [])
    with pytest.raises(UserError, match="already has a top-level '_shipmate' key"):
        encrypt_document(encrypted(), [PROVIDER])
    with pytest.raises(UserError, match=r"db: key 1 is not a string"):
        encrypt_document({"db": {1: "x"}}, [PROVIDER])
    with pytest.raises(UserError, match=r"a: cannot encrypt a value of type set"):
        encrypt_document({"a": {1}}, [PROVIDER])
    with pytest.raises(UserError, match="not an encrypted document"):
        decrypt_document({"a": "b"}, PROVIDER)


# --- text forms ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "fmt"), [
    ("secrets.yaml", "yaml"), ("a/b/secrets.YML", "yaml"), ("x.json", "json"), (".env", "dotenv"),
    (".env.production", "dotenv"), ("prod.env", "dotenv"),
])
def test_format_from_the_file_name(name: str, fmt: str) -> None:
    assert fileform.format_of(name) == fmt


def test_an_unknown_file_name_asks_for_the_format() -> None:
    with pytest.raises(UsageError, match=r"secrets\.txt: cannot tell the format"):
        fileform.format_of("secrets.txt")


def test_dotenv_syntax() -> None:
    text = ("# a comment\n\nexport A=plain\nB = 'single # not a comment'\nC=\"tab\\there \\\"q\\\"\" # note\n"
            "D=value # trailing comment\nE=\n")
    assert load(text, "dotenv") == {"A": "plain", "B": "single # not a comment", "C": 'tab\there "q"',
                                    "D": "value", "E": ""}


@pytest.mark.parametrize(("text", "message"), [
    ("A=1\nA=2\n", "s.env:2:1: A is set twice"),
    ("A=1\nnot a pair\n", "s.env:2:1: expected KEY=VALUE"),
    ("B='open\n", "s.env:1:1: B: the single quote is not closed on this line"),
    ('B="x" y\n', "s.env:1:1: B: unexpected text after the closing quote"),
])
def test_dotenv_errors_cite_the_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load(text, "dotenv", source="s.env")
    assert str(caught.value) == message


def test_parse_errors_cite_the_place() -> None:
    with pytest.raises(SpecError, match=r"^s\.yaml:2:"):
        load("a: 1\n b: [\n", "yaml", source="s.yaml")
    with pytest.raises(SpecError, match=r"^s\.json:1:6: Expecting value"):
        load('{"a":}', "json", source="s.json")
    with pytest.raises(SpecError, match="the top level must be a mapping"):
        load("- 1\n", "yaml", source="s.yaml")
    with pytest.raises(SpecError, match="not UTF-8"):
        load(b"a: \xff\n", "yaml")
    assert load("", "yaml") == {}


def test_dotenv_holds_text_only() -> None:
    with pytest.raises(UserError, match=r"a \.env file holds text values only"):
        dump({"A": 1}, "dotenv")


def test_json_and_yaml_text_is_stable() -> None:
    doc = encrypted()
    assert json.loads(dump(doc, "json")) == doc
    assert load(dump(doc, "yaml"), "yaml") == doc
