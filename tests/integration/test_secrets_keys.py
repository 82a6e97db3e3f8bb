"""The local key file provider on real files: created 0600 in a 0700 directory on first use (once,
even when several processes race), refused with a one-line fix when group or others may read it,
rotated by adding versions, and data keys rewrapped under the newest version without touching values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shipmate.errors import NotFound, UserError
from shipmate.secrets import crypto
from shipmate.secrets.crypto import Tampered, WrongKey
from shipmate.secrets.keys import LocalKeyProvider
from tests.unit.test_secrets_crypto import check_provider_contract

pytestmark = pytest.mark.integration

AAD = crypto.secret_aad("shop", "dev", "JWT_KEY", 1)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_key_file_is_made_on_first_use_0600_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "keys" / "master.key"
    provider = LocalKeyProvider(path)
    assert not path.parent.exists(), "constructing a provider touches nothing"
    assert provider.versions() == []
    old = os.umask(0)  # a careless umask must not open the file up
    try:
        sealed = crypto.seal(b"value", AAD, provider)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    data = json.loads(path.read_text())
    assert data["format"] == "shipmate-keyring/1"
    assert [k["version"] for k in data["keys"]] == [1]
    assert data["id"] == provider.key_id == sealed.key_id
    assert sorted(p.name for p in path.parent.iterdir()) == ["master.key", "master.key.lock"]
    assert crypto.open_(sealed, AAD, LocalKeyProvider(path)) == b"value"


def test_racing_first_uses_make_one_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    script = textwrap.dedent("""\
        import sys
        from pathlib import Path
        from shipmate.secrets.keys import LocalKeyProvider
        provider = LocalKeyProvider(Path(sys.argv[1]))
        provider.wrap(bytes(32), b"aad")
        print(provider.key_id)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    ids = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert ids == {LocalKeyProvider(path).key_id}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("open_mode", [0o640, 0o604, 0o644, 0o660, 0o700])
def test_a_key_file_open_to_others_is_refused_with_the_fix(tmp_path: Path, open_mode: int) -> None:
    path = tmp_path / "master.key"
    provider = LocalKeyProvider(path)
    sealed = crypto.seal(b"value", AAD, provider)
    path.chmod(open_mode)
    expected = (f"{path}: the key file is open to group or others (mode {open_mode:04o}); run: chmod 600 {path}"
                if open_mode & 0o077 else None)
    if expected is None:
        assert crypto.open_(sealed, AAD, LocalKeyProvider(path)) == b"value"
        return
    for action in (lambda p: crypto.open_(sealed, AAD, p), lambda p: p.wrap(bytes(32), b""), lambda p: p.rotate()):
        with pytest.raises(UserError) as caught:
            action(LocalKeyProvider(path))
        assert str(caught.value) == expected
        assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="chmod 600"):
        crypto.open_(sealed, AAD, provider)  # a provider that read the file before is refused too
    path.chmod(0o600)
    assert crypto.open_(sealed, AAD, provider) == b"value"


def test_broken_and_missing_key_files(tmp_path: Path) -> None:
    missing = LocalKeyProvider(tmp_path / "none.key")
    with pytest.raises(NotFound, match=r"no key file at .*none\.key: values sealed under it cannot be opened"):
        missing.unwrap(bytes(65), b"")
    assert not (tmp_path / "none.key").exists(), "opening never creates a key"
    garbage = tmp_path / "garbage.key"
    garbage.write_text('{"format": "something-else"}')
    garbage.chmod(0o600)
    with pytest.raises(UserError, match=r"garbage\.key: not a shipmate key file \(format is not shipmate-keyring/1\)"):
        LocalKeyProvider(garbage).wrap(bytes(32), b"")
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(UserError, match="cannot read the key file"):
        LocalKeyProvider(directory).wrap(bytes(32), b"")


def test_the_provider_keeps_the_contract(tmp_path: Path) -> None:
    provider = LocalKeyProvider(tmp_path / "master.key")
    check_provider_contract(provider, provider.rotate)


def test_rotation_keeps_old_versions_and_rewrap_moves_data_keys(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    provider = LocalKeyProvider(path)
    sealed = crypto.seal(b"the value", AAD, provider)
    ring = provider.key_id
    assert LocalKeyProvider(path).rotate() == 2  # another process rotates: this one sees it
    assert provider.versions() == [1, 2]
    assert provider.key_id == ring
    assert mode(path) == 0o600
    assert crypto.open_(sealed, AAD, provider) == b"the value"
    moved = crypto.rewrap(sealed, AAD, provider)
    assert int.from_bytes(moved.wrapped[1:5], "big") == 2
    assert (moved.nonce, moved.ciphertext) == (sealed.nonce, sealed.ciphertext)
    assert crypto.open_(moved.to_text(), AAD, LocalKeyProvider(path)) == b"the value"
    assert crypto.rewrap(moved, AAD, provider) == moved
    fresh = crypto.seal(b"new", AAD, provider)
    assert int.from_bytes(fresh.wrapped[1:5], "big") == 2

    # a copy of the key file from before the rotation cannot open what was rewrapped, and says why
    data = json.loads(path.read_text())
    data["keys"] = data["keys"][:1]
    old_copy = tmp_path / "backup.key"
    old_copy.write_text(json.dumps(data))
    old_copy.chmod(0o600)
    with pytest.raises(WrongKey, match=r"wrapped under version 2 of key file .*backup\.key, which holds versions 1"):
        crypto.open_(moved, AAD, LocalKeyProvider(old_copy))


def test_another_key_file_is_named_as_the_wrong_key(tmp_path: Path) -> None:
    one, two = LocalKeyProvider(tmp_path / "one.key"), LocalKeyProvider(tmp_path / "two.key")
    sealed = crypto.seal(b"value", AAD, one)
    two.wrap(bytes(32), b"")
    with pytest.raises(WrongKey, match=f"sealed under local key '{one.key_id}', but the key given is '{two.key_id}'"):
        crypto.open_(sealed, AAD, two)


def test_a_changed_master_key_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    provider = LocalKeyProvider(path)
    sealed = crypto.seal(b"value", AAD, provider)
    data = json.loads(path.read_text())
    data["keys"][0]["key"] = "A" * 43 + "="
    path.write_text(json.dumps(data))
    with pytest.raises(Tampered, match=r"master\.key \(version 1\) does not authenticate the wrapped key"):
        crypto.open_(sealed, AAD, LocalKeyProvider(path))
