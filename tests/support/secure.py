# mypy: disable-error-code="import-untyped"
"""Throwaway TLS material, password files and a real etcd with TLS and/or auth.

:func:`make_pki` writes a CA, a server certificate for 127.0.0.1/localhost and a client
certificate (plus a second, unrelated CA) as PEM files, made with ``cryptography``; the
module-scoped fixture :func:`pki` gives one set per test module. :class:`SecureEtcd` runs
the Debian etcd binary on loopback with client-certificate TLS (``--client-cert-auth``)
and/or auth enabled (a root user and a ``pysyncer`` user whose role may read and write
:data:`tests.support.etcd.TEST_PREFIX`), stopped by the pid it started;
:func:`running_secure_etcd` starts one and closes it. :func:`secret_file` writes a
password file as an operator would; :func:`assert_login_refusal` checks the error a wrong
one gives. Used by the store, adapter and daemon credential tests.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pysyncer.procs import free_port, log_tail, spawn, stop_process
from tests.conftest import require_program
from tests.support.etcd import TEST_PREFIX

__all__ = [
    "Pki",
    "SecureEtcd",
    "assert_login_refusal",
    "make_pki",
    "pki",
    "running_secure_etcd",
    "secret_file",
]


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files :func:`make_pki` wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here
    other_client_cert: Path  # a client certificate signed by ``other_ca``
    other_client_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA, server and client certificates (and an unrelated CA) under ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def authority(label: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(label))
            .issuer_name(name(label))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return key, cert

    def leaf(
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        label: str,
        usage: x509.ObjectIdentifier,
        stem: str,
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(label))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        )
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, key_path)
        return cert_path, key_path

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = authority("pysyncer test CA")
    other_key, other_cert = authority("unrelated test CA")
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (directory / "other-ca.crt").write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    server = leaf(ca_key, ca_cert, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, "server")
    client = leaf(ca_key, ca_cert, "pysyncer", ExtendedKeyUsageOID.CLIENT_AUTH, "client")
    other = leaf(other_key, other_cert, "pysyncer", ExtendedKeyUsageOID.CLIENT_AUTH, "other")
    return Pki(directory / "ca.crt", *server, *client, directory / "other-ca.crt", *other)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One set of TLS material (:func:`make_pki`) per test module."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def secret_file(directory: Path, text: str) -> str:
    """Path of a password file (owner-only, one line) holding ``text``."""
    path = directory / "password"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


def assert_login_refusal(error: BaseException, password: str, *named: str) -> None:
    """A refused login is told in one line that names each of ``named`` (the settings to
    fix, the server's answer) and never the password that was tried."""
    message = str(error)
    assert "\n" not in message and password not in message, message
    for part in named:
        assert part in message, (part, message)


class SecureEtcd:
    """One etcd member on loopback with TLS (client certificates required) and/or auth.

    With ``auth``: users ``root`` (password :attr:`ROOT_PASSWORD`) and ``pysyncer``
    (:attr:`PASSWORD`, role ``pysyncer`` with read-write on :attr:`prefix`), auth on.
    """

    ROOT_PASSWORD = "root-secret-pw"
    PASSWORD = "pysyncer-secret-pw"
    START_TIMEOUT = 20.0

    def __init__(
        self, binary: str, pki: Pki | None, *, auth: bool, prefix: str = TEST_PREFIX
    ) -> None:
        self.binary = binary
        self.pki = pki
        self.auth = auth
        self.prefix = prefix
        self.workdir = Path(tempfile.mkdtemp(prefix="pysyncer-etcd-secure-"))
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = self.workdir / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.auth_enabled = False  # survives a restart: it is in the data dir

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def _channel(self) -> Any:
        """A blocking gRPC channel to the member (TLS with the client certificate)."""
        import grpc

        if self.pki is None:
            return grpc.insecure_channel(self.endpoint)
        credentials = grpc.ssl_channel_credentials(
            self.pki.ca.read_bytes(), self.pki.client_key.read_bytes(),
            self.pki.client_cert.read_bytes(),
        )  # fmt: skip
        return grpc.secure_channel(self.endpoint, credentials)

    def _answers(self) -> bool:
        import grpc
        from aetcd import rpc

        with self._channel() as channel:
            try:
                rpc.MaintenanceStub(channel).Status(rpc.StatusRequest(), timeout=1)
            except grpc.RpcError:
                return False
        return True

    def _enable_auth(self) -> None:
        """Users root and pysyncer, role pysyncer on the prefix, then auth on."""
        from aetcd import rpc

        end = self.prefix[:-1] + chr(ord(self.prefix[-1]) + 1)
        with self._channel() as channel:
            auth = rpc.AuthStub(channel)
            auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=self.ROOT_PASSWORD))
            auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
            auth.RoleAdd(rpc.AuthRoleAddRequest(name="pysyncer"))
            permission = rpc.Permission(
                permType=rpc.Permission.READWRITE, key=self.prefix.encode(),
                range_end=end.encode(),
            )  # fmt: skip
            auth.RoleGrantPermission(
                rpc.AuthRoleGrantPermissionRequest(name="pysyncer", perm=permission)
            )
            auth.UserAdd(rpc.AuthUserAddRequest(name="pysyncer", password=self.PASSWORD))
            auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="pysyncer", role="pysyncer"))
            auth.AuthEnable(rpc.AuthEnableRequest())

    def start(self) -> None:
        scheme = "https" if self.pki is not None else "http"
        client = f"{scheme}://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [
            self.binary, "--name=secure", f"--data-dir={self.workdir / 'data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=secure={peer}", "--initial-cluster-state=new",
            "--heartbeat-interval=50", "--election-timeout=500", "--log-level=warn",
            "--logger=zap",
        ]  # fmt: skip
        if self.pki is not None:
            command += [
                "--client-cert-auth", f"--trusted-ca-file={self.pki.ca}",
                f"--cert-file={self.pki.server_cert}", f"--key-file={self.pki.server_key}",
            ]  # fmt: skip
        self.process = spawn(command, self.log_path)
        deadline = time.monotonic() + self.START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited at start: {self.log_tail()}")
            if self._answers():
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd not healthy: {self.log_tail()}")
            time.sleep(0.1)
        if self.auth and not self.auth_enabled:
            self._enable_auth()
            self.auth_enabled = True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, 5.0, 5.0)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self) -> str:
        return log_tail(self.log_path)


@contextlib.contextmanager
def running_secure_etcd(pki: Pki | None, *, auth: bool) -> Iterator[SecureEtcd]:
    """A started :class:`SecureEtcd` (TLS when ``pki`` is given), closed on the way out.

    Skips (or fails under CI=true) where the etcd binary is missing.
    """
    server = SecureEtcd(require_program("etcd", "etcd-server"), pki, auth=auth)
    try:
        server.start()
        yield server
    finally:
        server.close()
