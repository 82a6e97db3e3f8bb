"""Versioned secrets sealed in the real SQLite control-plane store: round trip across a reopen,
versions and states, rotate keeping the previous version for its grace period, a changed or moved
stored row refused by name, no plaintext in the database file, and rewrap after a master key
rotation or to another key file."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipmate.errors import Conflict, NotFound
from shipmate.secrets.crypto import Misplaced, Tampered, WrongKey
from shipmate.secrets.keys import LocalKeyProvider
from shipmate.secrets.store import SecretStore, SecretVersion, Value
from shipmate.store.db import Store

pytestmark = pytest.mark.integration

PLAIN = b"pg-password-\x00-do-not-leak"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "state")
    yield opened
    opened.close()


@pytest.fixture
def secrets(store: Store, tmp_path: Path) -> SecretStore:
    return SecretStore(store, LocalKeyProvider(tmp_path / "keys" / "master.key"), app="shop", now=Clock())


def sql(tmp_path: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "state" / "state.db") as db:
        return db.execute(query, args).fetchall()


def test_round_trip_across_a_reopen(secrets: SecretStore, tmp_path: Path) -> None:
    assert secrets.put("prod", "DB_PASSWORD", PLAIN) == 1
    assert secrets.put("prod", "API_TOKEN", b"tok") == 1
    assert secrets.put("dev", "DB_PASSWORD", b"dev-pw") == 1
    secrets.store.close()

    again = SecretStore(Store.open(tmp_path / "state"), LocalKeyProvider(tmp_path / "keys" / "master.key"), app="shop")
    version, value = again.current("prod", "DB_PASSWORD")
    assert (version, value) == (1, PLAIN)
    assert again.current("dev", "DB_PASSWORD") == Value(1, b"dev-pw")
    assert again.names("prod") == ["API_TOKEN", "DB_PASSWORD"]
    assert again.previous("prod", "DB_PASSWORD") is None
    assert again.versions("prod", "DB_PASSWORD") == [SecretVersion(1, "current", 1001.0)]
    again.store.close()


def test_nothing_shows_a_value(secrets: SecretStore, tmp_path: Path) -> None:
    secrets.put("prod", "DB_PASSWORD", PLAIN)
    value = secrets.current("prod", "DB_PASSWORD")
    assert repr(value) == str(value) == "Value(version=1, value=<hidden>)"
    assert "do-not-leak" not in repr(secrets.versions("prod", "DB_PASSWORD"))
    assert "do-not-leak" not in repr(secrets.store.secret_versions("prod", "DB_PASSWORD"))
    for path in (tmp_path / "state").iterdir():
        assert PLAIN not in path.read_bytes(), path.name


def test_rotate_keeps_the_previous_version_for_its_grace_period(secrets: SecretStore) -> None:
    secrets.put("prod", "JWT_KEY", b"k1")
    assert secrets.rotate("prod", "JWT_KEY", b"k2") == 2
    assert secrets.current("prod", "JWT_KEY") == (2, b"k2")
    assert secrets.previous("prod", "JWT_KEY") == (1, b"k1")
    assert secrets.rotate("prod", "JWT_KEY", b"k3") == 3
    assert [(v.version, v.state) for v in secrets.versions("prod", "JWT_KEY")] == [
        (1, "retired"), (2, "previous"), (3, "current")]
    assert secrets.retire_previous("prod", "JWT_KEY") == 2
    assert secrets.previous("prod", "JWT_KEY") is None
    assert secrets.retire_previous("prod", "JWT_KEY") is None
    assert secrets.get("prod", "JWT_KEY", 1) == (1, b"k1"), "retired versions stay for rollbacks"


def test_put_retires_older_versions_at_once(secrets: SecretStore) -> None:
    secrets.put("prod", "X", b"a")
    secrets.rotate("prod", "X", b"b")
    assert secrets.put("prod", "X", b"c") == 3
    assert [v.state for v in secrets.versions("prod", "X")] == ["retired", "retired", "current"]
    assert secrets.previous("prod", "X") is None


def test_missing_secrets_are_named(secrets: SecretStore) -> None:
    with pytest.raises(NotFound, match="no secret 'NOPE' in environment 'prod'; set it with `shipmate secrets set"):
        secrets.current("prod", "NOPE")
    with pytest.raises(NotFound):
        secrets.rotate("prod", "NOPE", b"x")
    secrets.put("prod", "X", b"a")
    with pytest.raises(NotFound, match="no version 7 of secret 'X'"):
        secrets.get("prod", "X", 7)


def test_a_version_number_that_is_not_next_conflicts(secrets: SecretStore) -> None:
    secrets.put("prod", "X", b"a")
    with pytest.raises(Conflict, match="version 1 is not the next one"):
        secrets.store.add_secret("prod", "X", 1, "{}", created_at=0.0, demote="retired")


@pytest.mark.parametrize("position", [0, 10, 60, 120, 200, 250, -40, -5, -1])
def test_a_changed_stored_row_is_detected(secrets: SecretStore, tmp_path: Path, position: int) -> None:
    secrets.put("prod", "DB_PASSWORD", PLAIN)
    ((sealed,),) = sql(tmp_path, "SELECT sealed FROM secrets")
    assert isinstance(sealed, str)
    chars = list(sealed)
    chars[position] = "B" if chars[position] != "B" else "C"
    sql(tmp_path, "UPDATE secrets SET sealed = ?", "".join(chars))
    with pytest.raises((Tampered, WrongKey)) as caught:
        secrets.current("prod", "DB_PASSWORD")
    assert "secret prod/DB_PASSWORD version 1" in str(caught.value)
    assert "do-not-leak" not in str(caught.value)


def test_a_row_moved_to_another_version_or_name_is_refused_by_name(secrets: SecretStore, tmp_path: Path) -> None:
    secrets.put("prod", "DB_PASSWORD", b"old")
    secrets.rotate("prod", "DB_PASSWORD", b"new")
    secrets.put("prod", "API_TOKEN", b"token")
    rows = dict(sql(tmp_path, "SELECT name || '/' || version, sealed FROM secrets"))
    sql(tmp_path, "UPDATE secrets SET sealed = ? WHERE name = 'DB_PASSWORD' AND version = 2", rows["DB_PASSWORD/1"])
    with pytest.raises(Misplaced, match=r"secret prod/DB_PASSWORD version 2 of app shop holds a value sealed for "
                                        r"another secret: version '1', not '2'"):
        secrets.current("prod", "DB_PASSWORD")
    sql(tmp_path, "UPDATE secrets SET sealed = ? WHERE name = 'API_TOKEN'", rows["DB_PASSWORD/2"])
    with pytest.raises(Misplaced, match="name 'DB_PASSWORD', not 'API_TOKEN'; version '2', not '1'"):
        secrets.current("prod", "API_TOKEN")
    sql(tmp_path, "UPDATE secrets SET environment = 'dev' WHERE name = 'API_TOKEN'")
    with pytest.raises(Misplaced, match="environment 'prod', not 'dev'"):
        secrets.current("dev", "API_TOKEN")


def test_rewrap_all_after_a_master_key_rotation(secrets: SecretStore, tmp_path: Path) -> None:
    provider = secrets.provider
    assert isinstance(provider, LocalKeyProvider)
    for name in ("A", "B"):
        secrets.put("prod", name, name.encode() * 3)
        secrets.rotate("prod", name, name.encode() * 4)
    before = dict(sql(tmp_path, "SELECT name || version, sealed FROM secrets"))
    assert secrets.rewrap_all() == 0, "nothing to move before a rotation"
    provider.rotate()
    assert secrets.rewrap_all() == 4
    assert secrets.rewrap_all() == 0
    after = dict(sql(tmp_path, "SELECT name || version, sealed FROM secrets"))
    for key, text in after.items():
        new, old = json.loads(str(text)), json.loads(str(before[key]))
        assert new["wrapped"] != old["wrapped"]
        assert base64.b64decode(new["wrapped"])[1:5] == (2).to_bytes(4, "big"), "under master key version 2"
        assert (new["nonce"], new["ct"]) == (old["nonce"], old["ct"]), "the value untouched"
    assert secrets.current("prod", "A") == (2, b"AAAA")
    assert secrets.previous("prod", "B") == (1, b"BBB")


def test_rewrap_all_to_another_key_file(secrets: SecretStore, tmp_path: Path) -> None:
    old = secrets.provider
    secrets.put("prod", "A", b"value-a")
    secrets.put("dev", "B", b"value-b")
    new = LocalKeyProvider(tmp_path / "new.key")
    new.wrap(bytes(32), b"")  # make it
    assert secrets.rewrap_all(new) == 2
    assert secrets.provider is new
    assert secrets.current("prod", "A") == (1, b"value-a")
    with pytest.raises(WrongKey):
        SecretStore(secrets.store, old, app="shop").current("prod", "A")
    assert secrets.rewrap_all(new) == 0


def test_an_older_store_gains_the_secrets_table(tmp_path: Path) -> None:
    Store.open(tmp_path / "state").close()
    sql(tmp_path, "DROP TABLE secrets")
    store = Store.open(tmp_path / "state")
    secrets = SecretStore(store, LocalKeyProvider(tmp_path / "k.key"), app="shop")
    secrets.put("prod", "A", b"x")
    assert secrets.current("prod", "A") == (1, b"x")
    store.close()
