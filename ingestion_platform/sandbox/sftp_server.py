"""A real SSH/SFTP server on localhost (asyncssh), so the SFTP resource is tested and benchmarked against the protocol.

It serves `root` as `/` (one subfolder per tenant), accepts password and public-key logins for configured users,
and keeps its host key in a file so the pins written into tenants.yaml survive restarts. Run it in-process for
tests (a background thread with its own event loop), or as its own process for `ingestion-platform dev`:

    python -m ingestion_platform.sandbox.sftp_server --root D --port 2222 --user demo:secret --host-key F
"""

import argparse
import asyncio
import contextlib
import hmac
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import asyncssh

HOST_KEY_ALGORITHM = "ssh-ed25519"


@dataclass
class FaultInjector:
    """Server-side faults for tests, armed between downloads: a real dropped connection, not a mocked one.

    Resume logic is only worth something if it is exercised against a connection that really dies mid-transfer,
    at a byte count the test controls, and if the test can see where the retry started reading.
    """

    drop_after_bytes: int | None = None
    first_read_offsets: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def drop_next_connection_after(self, nbytes: int) -> None:
        """Abort the first connection that has served `nbytes` of file data; later connections are left alone."""
        with self._lock:
            self.drop_after_bytes = nbytes
            self.first_read_offsets.clear()

    def record_first_read(self, offset: int) -> None:
        """Called by each SFTP session on its first read, so a test sees where a resumed download started."""
        with self._lock:
            self.first_read_offsets.append(offset)

    def should_drop(self, served: int) -> bool:
        with self._lock:
            if self.drop_after_bytes is not None and served >= self.drop_after_bytes:
                self.drop_after_bytes = None
                return True
            return False


@dataclass(frozen=True)
class SFTPServerInfo:
    host: str
    port: int
    host_key_line: str  # `ssh-ed25519 AAAA...`: what a tenant's `host_keys` pins
    fingerprint: str  # `SHA256:...`, the other accepted pin form
    faults: FaultInjector = field(repr=False, compare=False)

    @property
    def known_hosts_line(self) -> str:
        """The line OpenSSH clients read from a known_hosts file (non-default ports are written `[host]:port`)."""
        return f"[{self.host}]:{self.port} {self.host_key_line}"


class _Server(asyncssh.SSHServer):
    def __init__(self, passwords: Mapping[str, str], authorized_keys: Mapping[str, Sequence[asyncssh.SSHKey]]):
        self._passwords = passwords
        self._authorized_keys = authorized_keys

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return bool(self._passwords)

    def validate_password(self, username: str, password: str) -> bool:
        expected = self._passwords.get(username)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    def public_key_auth_supported(self) -> bool:
        return bool(self._authorized_keys)

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        offered = key.public_data
        return any(offered == allowed.public_data for allowed in self._authorized_keys.get(username, ()))


class _ChrootSFTPServer(asyncssh.SFTPServer):
    """asyncssh's SFTP server confined to the root folder, counting served bytes for the fault injector."""

    def __init__(self, chan: asyncssh.SSHServerChannel, root: Path, faults: FaultInjector):
        super().__init__(chan, chroot=str(root).encode())
        self._faults = faults
        self._served: int | None = None

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if self._served is None:
            self._faults.record_first_read(offset)
            self._served = 0
        data: bytes = super().read(file_obj, offset, size)  # type: ignore[assignment]
        self._served += len(data)
        if self._faults.should_drop(self._served):
            self.connection.abort()
        return data


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """Reuse the key in `path`, or generate one there: clients pin it, so it must not change between runs."""
    if path.is_file():
        return asyncssh.read_private_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key(HOST_KEY_ALGORITHM)
    key.write_private_key(path)
    path.chmod(0o600)
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))
    return key


def public_key_line(key: asyncssh.SSHKey) -> str:
    """`type base64` without the comment: the exact text a tenant pins."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


async def _listen(
    root: Path,
    passwords: Mapping[str, str],
    authorized_keys: Mapping[str, Sequence[asyncssh.SSHKey]],
    host_key: asyncssh.SSHKey,
    host: str,
    port: int,
    faults: FaultInjector,
) -> asyncssh.SSHAcceptor:
    return await asyncssh.listen(
        host,
        port,
        server_host_keys=[host_key],
        server_factory=lambda: _Server(passwords, authorized_keys),
        sftp_factory=lambda chan: _ChrootSFTPServer(chan, root, faults),
        allow_scp=False,
        reuse_address=True,
    )


def _read_authorized_keys(authorized_keys: Mapping[str, Sequence[str]] | None) -> dict[str, list[asyncssh.SSHKey]]:
    return {
        user: [asyncssh.import_public_key(line) for line in lines] for user, lines in (authorized_keys or {}).items()
    }


@contextlib.contextmanager
def run_sftp_server(
    root: Path,
    users: Mapping[str, str],
    host_key_path: Path,
    port: int = 0,
    *,
    authorized_keys: Mapping[str, Sequence[str]] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[SFTPServerInfo]:
    """Serve `root` over SFTP from a background thread until the block exits.

    `users` maps user names to passwords; `authorized_keys` maps user names to OpenSSH public key lines (OpenSSH's
    `sftp` only logs in with keys in batch mode). Port 0 picks a free port, reported in the yielded info.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    host_key = load_or_create_host_key(Path(host_key_path))
    keys = _read_authorized_keys(authorized_keys)
    faults = FaultInjector()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sandbox-sftp-server", daemon=True)
    thread.start()
    try:
        acceptor = asyncio.run_coroutine_threadsafe(
            _listen(root, dict(users), keys, host_key, host, port, faults), loop
        ).result(timeout=30)
        try:
            yield SFTPServerInfo(
                host=host,
                port=acceptor.get_port(),
                host_key_line=public_key_line(host_key),
                fingerprint=host_key.get_fingerprint("sha256"),
                faults=faults,
            )
        finally:
            acceptor.close()
            asyncio.run_coroutine_threadsafe(acceptor.wait_closed(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def _parse_pairs(values: Sequence[str], what: str) -> dict[str, list[str]]:
    pairs: dict[str, list[str]] = {}
    for value in values:
        user, sep, rest = value.partition(":")
        if not sep or not user or not rest:
            raise SystemExit(f"--{what} expects USER:VALUE, got {value!r}")
        pairs.setdefault(user, []).append(rest)
    return pairs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a folder over SFTP on localhost for the sandbox.")
    parser.add_argument("--root", type=Path, required=True, help="folder served as /, one subfolder per tenant")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2222, help="0 picks a free port")
    parser.add_argument("--user", action="append", default=[], help="USER:PASSWORD, repeatable")
    parser.add_argument(
        "--authorized-key", action="append", default=[], help="USER:PATH of an OpenSSH public key file, repeatable"
    )
    parser.add_argument("--host-key", type=Path, required=True, help="host key file, generated when missing")
    args = parser.parse_args(argv)

    passwords = {user: secrets[-1] for user, secrets in _parse_pairs(args.user, "user").items()}
    authorized = {
        user: [Path(p).read_text(encoding="utf-8").strip() for p in paths]
        for user, paths in _parse_pairs(args.authorized_key, "authorized-key").items()
    }
    if not passwords and not authorized:
        raise SystemExit("configure at least one --user or --authorized-key")

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with run_sftp_server(
        args.root, passwords, args.host_key, args.port, authorized_keys=authorized, host=args.host
    ) as info:
        # Scripts (the bench, `ingestion-platform dev`) read these lines to learn the port and the pins.
        print(f"listening {info.host}:{info.port}", flush=True)
        print(f"host_key {info.host_key_line}", flush=True)
        print(f"fingerprint {info.fingerprint}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
