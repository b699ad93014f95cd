"""Benchmark SFTP downloads: our resource against paramiko's `SFTPClient.get` defaults and OpenSSH's `sftp` client.

Why: the old service and the peers' connectors read report files with paramiko's defaults, which reach about a
quarter of OpenSSH's speed (paramiko issue 1080), and large files time out. The issue sets the bar at >= 80% of
OpenSSH's `sftp`. This script serves one file (200 MB of random bytes by default, so nothing compresses), downloads
it each way, checks every copy's SHA-256, and prints MB/s (10^6 bytes) and the ratios. Each Python client runs in a
fresh subprocess that times connect + login + transfer (the span `sftp` spends too) and reports how much its RSS grew
during the download, which must stay bounded by the pipelined segment rather than grow with the file. Each method
runs `--repeats` times, interleaved; the best run counts, because other work on the machine only slows runs down.

The server is the sandbox's asyncssh server in its own process (`--server sandbox`, the default: pure Python, so it
runs wherever the tests run), or OpenSSH's own `sshd` with `internal-sftp` on a free port and a throw-away config
(`--server sshd`, needs Debian `openssh-server`), to check that the sandbox server is not what limits the figures.

Run: `uv run python bench/bench_sftp.py [--size-mb 200] [--repeats 3] [--server sandbox|sshd]`. Needs OpenSSH's
client (`/usr/bin/sftp`, Debian `openssh-client`). The last line is
`RESULT sftp_ours_mb_s=N sftp_paramiko_default_mb_s=N sftp_openssh_mb_s=N ours_vs_openssh=R`.
"""

import argparse
import getpass
import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ingestion_platform.resources.sftp import SFTPResource
from ingestion_platform.tenants import SFTPSettings

KEY_ENV = "BENCH_SFTP_KEY"
FILE_NAME = "big.bin"
SFTP = shutil.which("sftp") or "/usr/bin/sftp"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# (method, label, the OpenSSH cipher to force, or None for the client's defaults)
METHODS = (
    ("ours", "our SFTPResource", None),
    ("paramiko", "paramiko SFTPClient.get defaults", None),
    ("openssh", "OpenSSH sftp defaults", None),
    ("openssh_gcm", "OpenSSH sftp -c aes128-gcm (the cipher ours negotiates)", "aes128-gcm@openssh.com"),
)


@dataclass(frozen=True)
class Run:
    seconds: float
    rss_growth_mb: float | None  # Python clients only


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    remote_dir: str  # where the served file is, as the server names it
    host_key_line: str
    known_hosts: Path
    key_path: Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux


def _client_ours(args: argparse.Namespace) -> float:
    settings = SFTPSettings(
        host="127.0.0.1",
        port=args.port,
        username=args.user,
        host_keys=(args.host_key_line,),
        private_key_env=KEY_ENV,
        remote_dir=args.remote_dir,
    )
    started = time.perf_counter()
    with SFTPResource().session(settings, "bench") as session:
        session.download(session.remote_path(FILE_NAME), args.target)
    return time.perf_counter() - started


def _client_paramiko(args: argparse.Namespace) -> float:
    started = time.perf_counter()
    client = paramiko.SSHClient()
    client.load_host_keys(args.known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect("127.0.0.1", args.port, args.user, key_filename=args.key, look_for_keys=False, allow_agent=False)
    with client, client.open_sftp() as sftp:
        sftp.get(f"{args.remote_dir}/{FILE_NAME}", args.target)
    return time.perf_counter() - started


def run_client(args: argparse.Namespace) -> None:
    """Child process: one download, then a JSON line with its duration and RSS growth (imports already done)."""
    baseline = _rss_mb()
    seconds = (_client_ours if args.client == "ours" else _client_paramiko)(args)
    print(json.dumps({"seconds": seconds, "rss_growth_mb": _peak_rss_mb() - baseline}))


def _client_key(workdir: Path) -> tuple[Path, Path]:
    """An Ed25519 login key: OpenSSH's `sftp` only logs in with a key in batch mode."""
    key = ed25519.Ed25519PrivateKey.generate()
    key_path = workdir / "client_key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    pub_path = workdir / "client_key.pub"
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub_path.write_bytes(public)
    return key_path, pub_path


def _known_hosts(workdir: Path, host: str, port: int, host_key_line: str) -> Path:
    path = workdir / "known_hosts"
    path.write_text(f"[{host}]:{port} {host_key_line}\n", encoding="utf-8")
    return path


@contextmanager
def serve_sandbox(source_dir: Path, workdir: Path) -> Iterator[Server]:
    """The sandbox server in its own process, so it never competes with a Python client for the GIL."""
    key_path, pub_path = _client_key(workdir)
    user = "bench"
    command = [
        sys.executable, "-m", "ingestion_platform.sandbox.sftp_server", "--root", str(source_dir.parent),
        "--port", "0", "--authorized-key", f"{user}:{pub_path}", "--host-key", str(workdir / "host_key"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().rstrip("\n").split(" ", 1) for _ in range(3))
        host, port = lines["listening"].rsplit(":", 1)
        known_hosts = _known_hosts(workdir, host, int(port), lines["host_key"])
        yield Server(host, int(port), user, f"/{source_dir.name}", lines["host_key"], known_hosts, key_path)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_sshd(source_dir: Path, workdir: Path) -> Iterator[Server]:
    """OpenSSH's sshd on a free port with its own config, logging in the current user with a generated key."""
    if not Path(SSHD).is_file():
        raise SystemExit(f"{SSHD} not found: install Debian's openssh-server, or use --server sandbox")
    key_path, pub_path = _client_key(workdir)
    host_key = workdir / "sshd_host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    port = _free_port()
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {pub_path}", "StrictModes no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp", "",
        ]),
        encoding="utf-8",
    )  # fmt: skip
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"sshd did not start on port {port}") from None
                time.sleep(0.1)
        host_key_line = " ".join(host_key.with_suffix(".pub").read_text(encoding="utf-8").split()[:2])
        known_hosts = _known_hosts(workdir, "127.0.0.1", port, host_key_line)
        yield Server("127.0.0.1", port, getpass.getuser(), str(source_dir), host_key_line, known_hosts, key_path)
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_method(method: str, cipher: str | None, server: Server, target: Path) -> Run:
    if method.startswith("openssh"):
        batch = target.with_suffix(".batch")
        batch.write_text(f"get {server.remote_dir}/{FILE_NAME} {target}\n", encoding="utf-8")
        options = ["-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes"]
        options += ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(server.key_path)]
        options += ["-c", cipher] if cipher else []
        command = [SFTP, "-q", "-b", str(batch), "-P", str(server.port), *options, f"{server.user}@{server.host}"]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return Run(time.perf_counter() - started, None)
    command = [
        sys.executable, __file__, "--client", method, "--port", str(server.port), "--user", server.user,
        "--remote-dir", server.remote_dir, "--host-key-line", server.host_key_line,
        "--known-hosts", str(server.known_hosts), "--key", str(server.key_path), "--target", str(target),
    ]  # fmt: skip
    env = os.environ | {KEY_ENV: server.key_path.read_text(encoding="utf-8")}
    output = subprocess.run(command, check=True, env=env, capture_output=True, text=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return Run(result["seconds"], result["rss_growth_mb"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(8 * 2**20):
            digest.update(block)
    return digest.hexdigest()


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as file:
        for start in range(0, size, 8 * 2**20):
            file.write(os.urandom(min(8 * 2**20, size - start)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--server", choices=["sandbox", "sshd"], default="sandbox")
    for hidden in ("--client", "--port", "--user", "--remote-dir", "--host-key-line", "--known-hosts", "--key"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        args.port = int(args.port)
        run_client(args)
        return

    size = args.size_mb * 10**6
    serve = serve_sshd if args.server == "sshd" else serve_sandbox
    with tempfile.TemporaryDirectory(prefix="bench_sftp_") as tmp:
        workdir = Path(tmp)
        source = workdir / "root" / "bench" / FILE_NAME
        source.parent.mkdir(parents=True)
        _write_random(source, size)
        expected = _sha256(source)
        runs: dict[str, list[Run]] = {method: [] for method, _, _ in METHODS}
        with serve(source.parent, workdir) as server:
            print(f"serving {size / 1e6:.0f} MB from the {args.server} SFTP server on port {server.port}")
            for repeat in range(args.repeats):
                for method, _, cipher in METHODS:
                    target = workdir / f"{method}.bin"
                    run = run_method(method, cipher, server, target)
                    if _sha256(target) != expected:
                        raise SystemExit(f"{method}: the downloaded copy differs from the source")
                    target.unlink()
                    runs[method].append(run)
                    memory = f", RSS +{run.rss_growth_mb:.0f} MB" if run.rss_growth_mb is not None else ""
                    print(f"  run {repeat + 1} {method:12s} {size / run.seconds / 1e6:7.1f} MB/s{memory}")

    best = {method: size / min(r.seconds for r in method_runs) / 1e6 for method, method_runs in runs.items()}
    print()
    for method, label, _ in METHODS:
        growths = [r.rss_growth_mb for r in runs[method] if r.rss_growth_mb is not None]
        memory = f"   (peak RSS growth {max(growths):.0f} MB)" if growths else ""
        print(f"{label:58s} {best[method]:7.1f} MB/s{memory}")
    ours_vs_openssh = best["ours"] / best["openssh"]
    print(f"ours / OpenSSH sftp defaults:     {ours_vs_openssh:.2f}  (target >= 0.80)")
    print(f"ours / OpenSSH sftp same cipher:  {best['ours'] / best['openssh_gcm']:.2f}")
    print(f"ours / paramiko get defaults:     {best['ours'] / best['paramiko']:.2f}")
    if min(best.values()) / max(best.values()) > 0.85:
        print("note: all clients within 15% of each other; the server, not the clients, may be the bottleneck")
    print(
        f"RESULT sftp_ours_mb_s={best['ours']:.1f} sftp_paramiko_default_mb_s={best['paramiko']:.1f} "
        f"sftp_openssh_mb_s={best['openssh']:.1f} ours_vs_openssh={ours_vs_openssh:.2f}"
    )


if __name__ == "__main__":
    main()
