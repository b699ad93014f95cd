"""The SFTP resource against a real SSH/SFTP server (the sandbox's asyncssh server), never a mocked client."""

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ingestion_platform.resources.sftp import (
    HostKeyMismatchError,
    SFTPAuthenticationError,
    SFTPConnectError,
    SFTPCredentialsError,
    SFTPError,
    SFTPResource,
    UnsafeRemotePathError,
    check_file_name,
)
from ingestion_platform.sandbox.sftp_server import SFTPServerInfo, run_sftp_server
from ingestion_platform.tenants import SFTPSettings

MiB = 1024 * 1024
TENANT = "acme"
PASSWORD = "s3cret"
PASSWORD_ENV = "TEST_SFTP_ACME_PASSWORD"
KEY_ENV = "TEST_SFTP_ACME_KEY"

# Small requests and segments, so a few MiB cross many segment boundaries and a drop lands mid-transfer.
REQUEST_SIZE = 64 * 1024
IN_FLIGHT = 8
SFTP = SFTPResource(request_size=REQUEST_SIZE, requests_in_flight=IN_FLIGHT, max_attempts=3, connect_timeout=2)


def _private_keys() -> dict[str, Any]:
    return {
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
        "ecdsa": ec.generate_private_key(ec.SECP256R1()),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


def _public_line(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@dataclass(frozen=True)
class Server:
    info: SFTPServerInfo
    root: Path
    client_keys: dict[str, Any]

    @property
    def tenant_dir(self) -> Path:
        return self.root / TENANT


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("sftp")
    keys = _private_keys()
    authorized = {TENANT: [_public_line(key) for key in keys.values()]}
    with run_sftp_server(base / "root", {TENANT: PASSWORD}, base / "host_key", authorized_keys=authorized) as info:
        (base / "root" / TENANT).mkdir()
        yield Server(info, base / "root", keys)


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def _settings(server: Server, **overrides: Any) -> SFTPSettings:
    values: dict[str, Any] = {
        "host": server.info.host,
        "port": server.info.port,
        "username": TENANT,
        "host_keys": (server.info.host_key_line,),
        "password_env": PASSWORD_ENV,
        "remote_dir": f"/{TENANT}",
    }
    return SFTPSettings(**(values | overrides))


def _other_host_key_line() -> str:
    return _public_line(ed25519.Ed25519PrivateKey.generate())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_list_files_skips_folders_and_unsafe_names(server: Server) -> None:
    folder = server.tenant_dir / "listing"
    folder.mkdir()
    (folder / "users_20240101.csv").write_bytes(b"user_id\n1\n")
    (folder / "locations_20240101.csv").write_bytes(b"")
    (folder / "archive").mkdir()
    (folder / "evil\\..\\name.csv").write_bytes(b"x")  # a legal POSIX name that would escape a Windows-style join
    mtime = int((folder / "users_20240101.csv").stat().st_mtime)

    with SFTP.session(_settings(server), TENANT) as session:
        files = session.list_files(f"/{TENANT}/listing")

    assert [(f.name, f.size) for f in files] == [("locations_20240101.csv", 0), ("users_20240101.csv", 10)]
    assert files[1].mtime == mtime


def test_download_streams_a_multi_megabyte_file(server: Server, tmp_path: Path) -> None:
    payload = os.urandom(5 * MiB + 123)  # not a multiple of the request size: the last request is short
    (server.tenant_dir / "big.bin").write_bytes(payload)
    target = tmp_path / "out" / "big.bin"

    os.utime(server.tenant_dir / "big.bin", (1_700_000_123, 1_700_000_123))

    with SFTP.session(_settings(server), TENANT) as session:
        result = session.download(session.remote_path("big.bin"), target)
        listed = next(f for f in session.list_files() if f.name == "big.bin")

    assert target.read_bytes() == payload
    assert (result.bytes, result.attempts) == (len(payload), 1)
    # The version downloaded is identified as the listing identifies it (what the SFTP sensors compare).
    assert (result.bytes, result.mtime) == (listed.size, listed.mtime) == (len(payload), 1_700_000_123)
    assert result.seconds > 0
    assert not target.with_name("big.bin.part").exists()


def test_download_resumes_from_the_received_offset_after_a_dropped_connection(server: Server, tmp_path: Path) -> None:
    payload = os.urandom(6 * MiB)
    (server.tenant_dir / "resume.bin").write_bytes(payload)
    drop_at = 2 * MiB
    server.info.faults.drop_next_connection_after(drop_at)

    with SFTP.session(_settings(server), TENANT) as session:
        result = session.download(f"/{TENANT}/resume.bin", tmp_path / "resume.bin")

    assert (tmp_path / "resume.bin").read_bytes() == payload
    assert result.attempts == 2
    first, second = server.info.faults.first_read_offsets
    # Segments are requested only once the previous one is on disk, so when the server has served `drop_at` bytes
    # the client holds at least every segment before the one in flight, and never more than was served.
    assert first == 0
    assert drop_at - REQUEST_SIZE * IN_FLIGHT <= second <= drop_at


def test_unknown_host_key_is_rejected_naming_tenant_host_and_offered_fingerprint(server: Server) -> None:
    settings = _settings(server, host_keys=(_other_host_key_line(),))
    started = time.monotonic()
    with pytest.raises(HostKeyMismatchError) as raised, SFTP.session(settings, TENANT):
        pass
    message = str(raised.value)
    assert TENANT in message
    assert f"{server.info.host}:{server.info.port}" in message
    assert server.info.fingerprint in message
    assert time.monotonic() - started < 5, "a host key mismatch must not be retried"


@pytest.mark.parametrize(
    "pins",
    [
        pytest.param(lambda info: (_other_host_key_line(), info.host_key_line), id="rotation-second-pin-matches"),
        pytest.param(lambda info: (info.fingerprint,), id="sha256-fingerprint"),
        pytest.param(lambda info: (info.known_hosts_line,), id="known-hosts-line"),
    ],
)
def test_pinned_host_keys_accepted(server: Server, pins: Any) -> None:
    with SFTP.session(_settings(server, host_keys=pins(server.info)), TENANT) as session:
        assert isinstance(session.list_files(), list)


def test_pin_of_a_key_type_the_server_lacks_fails_clearly(server: Server) -> None:
    settings = _settings(server, host_keys=(_public_line(server.client_keys["rsa"]),))
    with pytest.raises(SFTPError, match="no algorithm in common"), SFTP.session(settings, TENANT):
        pass


def test_garbage_pin_is_a_configuration_error(server: Server) -> None:
    settings = _settings(server, host_keys=("not-a-key",))
    with pytest.raises(SFTPError, match="neither an OpenSSH public key line"), SFTP.session(settings, TENANT):
        pass


def test_wrong_password_fails_fast_with_a_clear_error(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    started = time.monotonic()
    with pytest.raises(SFTPAuthenticationError) as raised, SFTP.session(_settings(server), TENANT):
        pass
    message = str(raised.value)
    assert all(part in message for part in (TENANT, server.info.host, PASSWORD_ENV))
    assert PASSWORD not in message and "wrong" not in message
    assert time.monotonic() - started < 5, "an authentication failure must not be retried"


def test_unset_secret_is_named(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(SFTPCredentialsError, match=PASSWORD_ENV), SFTP.session(_settings(server), TENANT):
        pass


@pytest.mark.parametrize(
    ("key_type", "encoding"),
    [
        ("ed25519", serialization.PrivateFormat.OpenSSH),
        ("ecdsa", serialization.PrivateFormat.TraditionalOpenSSL),
        ("rsa", serialization.PrivateFormat.PKCS8),
    ],
)
def test_private_key_login(
    server: Server, monkeypatch: pytest.MonkeyPatch, key_type: str, encoding: serialization.PrivateFormat
) -> None:
    key = server.client_keys[key_type]
    text = key.private_bytes(serialization.Encoding.PEM, encoding, serialization.NoEncryption()).decode()
    monkeypatch.setenv(KEY_ENV, text)
    settings = _settings(server, password_env=None, private_key_env=KEY_ENV)
    with SFTP.session(settings, TENANT) as session:
        assert isinstance(session.list_files(), list)


def test_private_key_stored_on_one_line(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    key = server.client_keys["ed25519"]
    text = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    monkeypatch.setenv(KEY_ENV, text.replace("\n", "\\n"))
    with SFTP.session(_settings(server, password_env=None, private_key_env=KEY_ENV), TENANT) as session:
        assert isinstance(session.list_files(), list)


def test_unreachable_host_is_retried_then_reported(server: Server) -> None:
    port = _closed_port()
    resource = SFTPResource(max_attempts=2, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(SFTPConnectError) as raised, resource.session(_settings(server, port=port), TENANT):
        pass
    assert f"127.0.0.1:{port}" in str(raised.value) and TENANT in str(raised.value)
    assert time.monotonic() - started < 10


def test_missing_remote_file_is_not_retried(server: Server, tmp_path: Path) -> None:
    started = time.monotonic()
    with SFTP.session(_settings(server), TENANT) as session, pytest.raises(FileNotFoundError):
        session.download(session.remote_path("nope.csv"), tmp_path / "nope.csv")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "remote_path",
    ["../etc/passwd", "/etc/passwd", f"/{TENANT}/../other/users.csv", "sub/../../x.csv", "a\\b.csv", "a\x00b.csv"],
)
def test_paths_outside_the_tenant_folder_are_rejected(server: Server, tmp_path: Path, remote_path: str) -> None:
    with SFTP.session(_settings(server), TENANT) as session, pytest.raises(UnsafeRemotePathError):
        session.download(remote_path, tmp_path / "out.csv")


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "a\\b", "a\x00b"])
def test_unsafe_file_names_are_rejected(name: str) -> None:
    with pytest.raises(UnsafeRemotePathError):
        check_file_name(name)


def test_paths_inside_the_tenant_folder_are_accepted(server: Server, tmp_path: Path) -> None:
    (server.tenant_dir / "ok.csv").write_bytes(b"a,b\n")
    with SFTP.session(_settings(server), TENANT) as session:
        assert session.download("ok.csv", tmp_path / "1.csv").bytes == 4
        assert session.download(f"/{TENANT}/./ok.csv", tmp_path / "2.csv").bytes == 4
