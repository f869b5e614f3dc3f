"""The demo pool's secrets: a gossip key file, a CA and one certificate per data center.

Owns making them in the demo's work directory (``secrets/``, mode 0700) with the same
code as ``pysyncer keygen`` and ``pysyncer tls ca create`` / ``tls cert create``
(:mod:`pysyncer.tlsgen`), and the daemon flags that use them: every demo syncer runs
with gossip encryption (``--encrypt-file``) and mutual TLS on the sync plane
(``--tls-ca``, ``--tls-cert``, ``--tls-key``), as a production pool would. Must not start
processes or talk to the registries.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from pysyncer.tlsgen import CA_CERT_FILE, create_ca, create_cert

__all__ = ["GOSSIP_KEY_BYTES", "PoolSecrets"]

GOSSIP_KEY_BYTES = 32  # AES-256, as `pysyncer keygen`


class PoolSecrets:
    """The files of one demo pool under ``root/secrets``."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "secrets"
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.key_file = self.directory / "gossip.key"
        if not self.key_file.exists():
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.b64encode(os.urandom(GOSSIP_KEY_BYTES)).decode() + "\n")
        self.ca_dir = self.directory / "ca"
        if not (self.ca_dir / CA_CERT_FILE).exists():
            create_ca(self.ca_dir)

    def flags(self, dc: str, node: str) -> list[str]:
        """The daemon flags of syncer ``node`` of ``dc`` (its certificate made on first use)."""
        cert = self.directory / f"{dc}-{node}.pem"
        key = self.directory / f"{dc}-{node}-key.pem"
        if not cert.exists():
            made = create_cert(dc, node, ca_dir=self.ca_dir, out_dir=self.directory)
            cert, key = made.cert, made.key
        return [
            "--encrypt-file", str(self.key_file),
            "--tls-ca", str(self.ca_dir / CA_CERT_FILE),
            "--tls-cert", str(cert),
            "--tls-key", str(key),
        ]  # fmt: skip
