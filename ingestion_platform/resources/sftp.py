"""SFTP over paramiko: pinned host keys, secrets from env vars, and fast downloads that resume after a drop.

Peers' connectors (dlt, Airbyte's SFTP source, dagster-ssh) accept any host key by default and read files with
paramiko's defaults, which reach about a quarter of OpenSSH's speed (paramiko issue 1080) and time out on large
files. This resource refuses hosts whose key is not pinned in the tenant's settings, streams files to disk through
a pipelined read with large requests and a large channel window, and resumes from the bytes already on disk.
"""

import base64
import binascii
import hashlib
import itertools
import posixpath
import socket
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import BinaryIO

import dagster as dg
import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import Field

from ingestion_platform.retry import is_transient, retry_transient
from ingestion_platform.tenants import SFTPSettings

# OpenSSH's sftp-server answers reads of up to 256 KiB - 1 KiB; a larger request comes back short and costs a
# round trip to fetch the rest, so this is the largest request that is fast against the most common server.
OPENSSH_MAX_READ = 255 * 1024

# AES-GCM first: one AEAD pass per packet is much cheaper in paramiko than its default AES-CTR + HMAC-SHA2.
_PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

# Host key algorithms that can present a key of each pinned type (an RSA key signs with SHA-2 algorithms).
_HOST_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


class SFTPError(Exception):
    """A tenant's SFTP host could not be used; the message names the tenant and host."""


class HostKeyMismatchError(SFTPError):
    """The server offered a host key that the tenant's settings do not pin: never transient, never auto-accepted."""


class SFTPAuthenticationError(SFTPError):
    """The server rejected the user's password or key: retrying cannot help."""


class SFTPCredentialsError(SFTPError):
    """The env var naming the secret is unset, or the secret is not a usable key."""


class SFTPConnectError(SFTPError, ConnectionError):
    """The host could not be reached or the connection dropped; a ConnectionError, so the retry policy retries it."""


class UnsafeRemotePathError(SFTPError, ValueError):
    """A remote name could escape the tenant's folder (remotely, or locally once used as a file name)."""


class IncompleteDownloadError(SFTPError):
    """The local copy does not have the remote file's size once the transfer ended."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    mtime: int  # seconds since the epoch, as SFTP reports it


@dataclass(frozen=True)
class DownloadResult:
    bytes: int  # the server's st_size of the version downloaded, equal to the bytes received
    mtime: int  # the server's st_mtime of that version, as `list_files` reports it: together they identify it
    seconds: float
    attempts: int  # more than 1 when a dropped connection was resumed


def check_file_name(name: str) -> str:
    """Return `name` if it is one plain path component, so it can be joined to a remote or a local folder."""
    if not name or name in {".", ".."} or any(c in name for c in "/\\\x00"):
        raise UnsafeRemotePathError(f"unsafe remote file name {name!r}: expected a single file name")
    return name


def _fingerprint(key_blob: bytes) -> str:
    """OpenSSH's `SHA256:` fingerprint (unpadded base64), as `ssh-keygen -lf` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class HostKeyPins:
    """The host keys a tenant trusts, as fingerprints, plus the key types to negotiate when all pins are keys."""

    fingerprints: frozenset[str]
    key_types: frozenset[str] | None  # None: some pin is a bare fingerprint, whose key type is unknown

    @classmethod
    def parse(cls, entries: Sequence[str], tenant_id: str) -> "HostKeyPins":
        fingerprints: set[str] = set()
        key_types: set[str] | None = set()
        for entry in entries:
            tokens = str(entry).split()
            if len(tokens) == 1 and tokens[0].startswith("SHA256:"):
                fingerprints.add(tokens[0].rstrip("="))
                key_types = None
                continue
            # `type base64 [comment]` or a known_hosts line `host type base64 [comment]`.
            for key_type, data in itertools.pairwise(tokens):
                blob = _decode_key_blob(key_type, data)
                if blob is not None:
                    fingerprints.add(_fingerprint(blob))
                    if key_types is not None:
                        key_types.add(key_type)
                    break
            else:
                raise SFTPError(
                    f"tenant {tenant_id!r}: host_keys entry {str(entry)[:60]!r} is neither an OpenSSH public key line "
                    "nor a SHA256: fingerprint"
                )
        return cls(frozenset(fingerprints), None if key_types is None else frozenset(key_types))

    def host_key_algorithms(self, available: Sequence[str]) -> list[str]:
        """Offer only algorithms of pinned types, so a server holding several keys presents the pinned one."""
        if self.key_types is None:
            return list(available)
        wanted = {alg for key_type in self.key_types for alg in _HOST_KEY_ALGORITHMS.get(key_type, (key_type,))}
        return [alg for alg in available if alg in wanted] or list(available)


def _decode_key_blob(key_type: str, data: str) -> bytes | None:
    """The key blob if `data` is base64 of an SSH key of `key_type` (the blob starts with its own type name)."""
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    prefix = len(key_type).to_bytes(4, "big") + key_type.encode()
    return blob if blob.startswith(prefix) else None


def load_private_key(text: str) -> paramiko.PKey:
    """Parse an Ed25519, ECDSA or RSA private key in OpenSSH or PEM form, as held in an env var."""
    if "\n" not in text.strip() and "\\n" in text:
        text = text.replace("\\n", "\n")  # CI secret stores and .env files often hold the key on one line
    data = text.encode()
    loaded: PrivateKeyTypes
    try:
        try:
            loaded = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SFTPCredentialsError(f"not an unencrypted OpenSSH or PEM private key ({exc})") from None
    # Round-trip through OpenSSH's format, which paramiko reads for every key type.
    openssh = loaded.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    key_class: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        key_class = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        key_class = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        key_class = paramiko.RSAKey
    else:
        raise SFTPCredentialsError(f"unsupported private key type {type(loaded).__name__}")
    return key_class.from_private_key(StringIO(openssh))


class SFTPResource(dg.ConfigurableResource):
    """SFTP access to tenants' hosts; where to connect and whom to trust come from each tenant's settings.

    The knobs here tune the client rather than a tenant: timeouts decide how fast a dead host is noticed, and
    request size, requests in flight and window size decide throughput (paramiko's defaults of 32 KiB requests
    and a 2 MiB window are why its downloads crawl).
    """

    connect_timeout: float = Field(default=10.0, description="seconds to open the TCP connection")
    banner_timeout: float = Field(default=30.0, description="seconds to wait for the SSH banner and key exchange")
    auth_timeout: float = Field(default=30.0, description="seconds to wait for the server's answer to a login")
    read_timeout: float = Field(
        default=60.0, description="seconds without an SFTP answer after which the connection counts as dropped"
    )
    request_size: int = Field(
        default=OPENSSH_MAX_READ, description="bytes per SFTP read request (lower it for servers that cap reads lower)"
    )
    requests_in_flight: int = Field(
        default=64,
        description="read requests pipelined ahead of the disk writer; buffered data stays below "
        "request_size x requests_in_flight",
    )
    window_size: int = Field(
        default=32 * 2**20,
        description="SSH channel window: unacknowledged bytes the server may send; keep it above "
        "request_size x requests_in_flight so the server never waits",
    )
    max_packet_size: int = Field(default=256 * 1024, description="largest SSH data packet the server may send")
    max_attempts: int = Field(default=5, description="attempts per connect, listing or download on transient errors")

    @contextmanager
    def session(self, settings: SFTPSettings, tenant_id: str) -> Iterator["SFTPSession"]:
        """A verified, logged-in session; it reconnects by itself when a connection drops mid-download."""
        session = SFTPSession(self, settings, tenant_id)
        try:
            session.connect()
            yield session
        finally:
            session.close()


class SFTPSession:
    """One tenant's SFTP connection, confined to the tenant's remote folder."""

    def __init__(self, resource: SFTPResource, settings: SFTPSettings, tenant_id: str):
        self._resource = resource
        self._settings = settings
        self._tenant_id = tenant_id
        self.where = f"tenant {tenant_id!r}: sftp://{settings.username}@{settings.host}:{settings.port}"
        self._pins = HostKeyPins.parse(settings.host_keys, tenant_id)
        self._base = posixpath.normpath(settings.remote_dir or ".")
        # Secrets are read before any connection, so a missing one fails at once instead of after a handshake.
        self._password = self._secret(settings.password_env, "password_env") if settings.password_env else None
        self._private_key = self._key(settings.private_key_env) if settings.private_key_env else None
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._log = dg.get_dagster_logger()

    def connect(self) -> None:
        self._call(lambda sftp: None)

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        if self._transport is not None:
            self._transport.close()
        self._sftp = self._transport = None

    def remote_path(self, name: str) -> str:
        """The path of file `name` in the tenant's remote folder."""
        return posixpath.join(self._base, check_file_name(name))

    def list_files(self, remote_dir: str | None = None) -> list[RemoteFile]:
        """Files (not folders) in `remote_dir` (default: the tenant's folder), by name.

        Names that could not be used safely as a file name are left out and logged: they come from the server,
        and callers build local paths from them.
        """
        directory = self._confine(remote_dir if remote_dir is not None else self._base)
        entries = self._call(lambda sftp: sftp.listdir_attr(directory))
        files = []
        for entry in entries:
            if entry.st_mode is not None and stat.S_ISDIR(entry.st_mode):
                continue
            try:
                name = check_file_name(entry.filename)
            except UnsafeRemotePathError as exc:
                self._log.warning(f"{self.where}: skipping {directory}: {exc}")
                continue
            files.append(RemoteFile(name=name, size=entry.st_size or 0, mtime=int(entry.st_mtime or 0)))
        return sorted(files, key=lambda f: f.name)

    def download(self, remote_path: str, local_path: str | Path) -> DownloadResult:
        """Stream `remote_path` to `local_path`, resuming from the bytes already received after a dropped connection.

        Data goes to `<local_path>.part` and is renamed only once its size equals the remote size, so a failed
        download never leaves a truncated file that looks complete. A `.part` left by an earlier call is discarded:
        nothing proves it came from the same version of the remote file.
        """
        path = self._confine(remote_path)
        target = Path(local_path)
        part = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        started = time.monotonic()
        attempts = 0
        identity: tuple[int | None, int | None] | None = None

        def transfer(sftp: paramiko.SFTPClient) -> tuple[int, int]:
            nonlocal attempts, identity
            attempts += 1
            try:
                attrs = sftp.stat(path)
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.where}: {path} does not exist on the server") from None
            if identity not in (None, (attrs.st_size, attrs.st_mtime)):
                self._log.warning(f"{self.where}: {path} changed between attempts; downloading it again from the start")
                part.unlink(missing_ok=True)
            identity = (attrs.st_size, attrs.st_mtime)
            size = attrs.st_size or 0
            offset = part.stat().st_size if part.exists() else 0
            if offset:
                self._log.info(f"{self.where}: resuming {path} at byte {offset} of {size}")
            with sftp.open(path, "rb") as remote, part.open("ab") as out:
                self._stream(remote, out, offset, size)
            return size, int(attrs.st_mtime or 0)

        size, mtime = self._call(transfer, timeout=None)
        received = part.stat().st_size
        if received != size:
            raise IncompleteDownloadError(
                f"{self.where}: {path} has {size} bytes on the server but {received} arrived; did it change meanwhile?"
            )
        part.replace(target)
        return DownloadResult(bytes=size, mtime=mtime, seconds=time.monotonic() - started, attempts=attempts)

    def _stream(self, remote: paramiko.SFTPFile, out: BinaryIO, offset: int, size: int) -> None:
        """Copy [offset, size) in segments of pipelined reads: fast like prefetch, bounded in memory and requests.

        `readv` sends a segment's read requests at once and yields the blocks in order, so the writer never waits a
        round trip per request; paramiko's whole-file `prefetch` instead queues every request up front and buffers
        whatever arrives, which grows memory with the file.
        """
        request_size = self._resource.request_size
        # paramiko splits reads into SFTPFile.MAX_REQUEST_SIZE (32 KiB) requests; servers answer far larger ones.
        remote.MAX_REQUEST_SIZE = request_size
        segment = request_size * self._resource.requests_in_flight
        for start in range(offset, size, segment):
            end = min(start + segment, size)
            chunks = [(at, min(request_size, end - at)) for at in range(start, end, request_size)]
            for block in remote.readv(chunks):
                out.write(block)

    def _call[T](self, fn: Callable[[paramiko.SFTPClient], T], *, timeout: float | None = 120.0) -> T:
        """Run `fn` on a live connection under the shared retry policy, reconnecting after a drop."""

        def attempt() -> T:
            alive = self._sftp is not None and self._transport is not None and self._transport.is_active()
            sftp = self._sftp if alive and self._sftp is not None else self._connect()
            try:
                return fn(sftp)
            except Exception as exc:
                alive = self._transport is not None and self._transport.is_active()
                if alive and not is_transient(exc):
                    raise
                self.close()
                if not alive and not is_transient(exc):
                    # paramiko raises plain OSError("Socket is closed") when a request meets a dead connection.
                    raise SFTPConnectError(f"{self.where}: connection lost ({exc})") from exc
                raise

        return retry_transient(attempt, attempts=self._resource.max_attempts, timeout=timeout)()

    def _connect(self) -> paramiko.SFTPClient:
        self.close()
        r, s = self._resource, self._settings
        try:
            sock = socket.create_connection((s.host, s.port), timeout=r.connect_timeout)
        except OSError as exc:
            raise SFTPConnectError(f"{self.where}: cannot reach the SFTP host ({exc})") from exc
        # Small read requests must not wait for Nagle's algorithm to batch them.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(
            sock, default_window_size=r.window_size, default_max_packet_size=r.max_packet_size
        )
        try:
            transport.banner_timeout = r.banner_timeout
            transport.auth_timeout = r.auth_timeout
            options = transport.get_security_options()
            options.ciphers = [c for c in _PREFERRED_CIPHERS if c in options.ciphers] + [
                c for c in options.ciphers if c not in _PREFERRED_CIPHERS
            ]
            options.key_types = self._pins.host_key_algorithms(options.key_types)
            try:
                transport.start_client(timeout=r.banner_timeout)
            except paramiko.IncompatiblePeer as exc:
                raise SFTPError(
                    f"{self.where}: no algorithm in common with the server ({exc}); the host key algorithms offered "
                    f"follow the key types pinned in host_keys: {', '.join(options.key_types)}"
                ) from exc
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise SFTPConnectError(f"{self.where}: SSH handshake failed ({exc})") from exc
            if not transport.is_active() or transport.host_key is None:
                # paramiko returns from start_client without an error when the banner never arrives.
                raise SFTPConnectError(f"{self.where}: no SSH handshake within {r.banner_timeout}s")
            self._verify_host_key(transport.get_remote_server_key())
            self._authenticate(transport)
            sftp = paramiko.SFTPClient.from_transport(
                transport, window_size=r.window_size, max_packet_size=r.max_packet_size
            )
            if sftp is None:
                raise SFTPConnectError(f"{self.where}: the server refused to open an SFTP channel")
            sftp.get_channel().settimeout(r.read_timeout)
        except BaseException:
            transport.close()
            raise
        self._transport, self._sftp = transport, sftp
        return sftp

    def _verify_host_key(self, key: paramiko.PKey) -> None:
        offered = _fingerprint(key.asbytes())
        if offered not in self._pins.fingerprints:
            raise HostKeyMismatchError(
                f"{self.where}: the server offered host key {key.get_name()} {offered}, which the tenant's host_keys "
                f"do not pin (pinned: {', '.join(sorted(self._pins.fingerprints))}). If the host rotated its key, "
                "confirm the new fingerprint with its operator and add it to host_keys."
            )

    def _authenticate(self, transport: paramiko.Transport) -> None:
        s = self._settings
        logins: list[tuple[str, Callable[[], object]]] = []
        if self._private_key is not None:
            key = self._private_key
            logins.append((f"private key from ${s.private_key_env}", lambda: transport.auth_publickey(s.username, key)))
        if self._password is not None:
            password = self._password
            logins.append((f"password from ${s.password_env}", lambda: transport.auth_password(s.username, password)))
        failures = []
        for label, login in logins:
            try:
                login()
            except paramiko.AuthenticationException as exc:
                failures.append(f"{label}: {exc}")
                continue
            if transport.is_authenticated():
                return
        raise SFTPAuthenticationError(
            f"{self.where}: the server rejected the login of user {s.username!r} ({'; '.join(failures)})"
        )

    def _secret(self, env: str, setting: str) -> str:
        value = dg.EnvVar(env).get_value()
        if not value:
            raise SFTPCredentialsError(f"{self.where}: environment variable {env} (the tenant's {setting}) is unset")
        return value

    def _key(self, env: str) -> paramiko.PKey:
        text = self._secret(env, "private_key_env")
        try:
            return load_private_key(text)
        except SFTPCredentialsError as exc:
            raise SFTPCredentialsError(f"{self.where}: environment variable {env}: {exc}") from None

    def _confine(self, path: str) -> str:
        """Normalise `path` (absolute, or relative to the tenant's folder) and refuse anything outside that folder."""
        if "\x00" in path or "\\" in path:
            raise UnsafeRemotePathError(f"{self.where}: unsafe remote path {path!r} (NUL or backslash)")
        if ".." in path.split("/"):
            raise UnsafeRemotePathError(f"{self.where}: unsafe remote path {path!r} ('..' component)")
        full = posixpath.normpath(posixpath.join(self._base, path))
        if self._base == ".":
            inside = not posixpath.isabs(full)
        else:
            inside = full == self._base or full.startswith(self._base.rstrip("/") + "/")
        if not inside:
            raise UnsafeRemotePathError(f"{self.where}: {path!r} is outside the tenant's folder {self._base!r}")
        return full
