"""TLS client settings of the adapters: the files and the :class:`ssl.SSLContext` made from them.

Shared by every adapter that opens TLS connections itself (the HTTP adapters through
:mod:`._http`, ZooKeeper's client): a CA bundle (``tls-ca``), an optional client
certificate and key (``tls-cert``, ``tls-key``) and whether to verify the server
(``tls-verify``). Files that cannot be loaded are a one-line ConfigError. It opens no
connection and knows no registry protocol.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from pysyncer.errors import ConfigError

__all__ = ["TlsOptions"]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    ca: str = ""
    cert: str = ""
    key: str = ""
    verify: bool = True

    @classmethod
    def of(cls, settings: Any) -> TlsOptions:
        """From an adapter's settings: ``tls_ca``, ``tls_cert``, ``tls_key``, ``tls_verify``."""
        s = settings
        return cls(s.tls_ca, s.tls_cert, s.tls_key, s.tls_verify)

    @property
    def custom(self) -> bool:
        """Anything besides the system's CAs with verification on."""
        return bool(self.ca or self.cert or not self.verify)

    def context(self, error_prefix: str) -> ssl.SSLContext:
        """A client context: the system's CAs (or ``ca``), the client certificate if any;
        ConfigError starting with ``error_prefix`` when a file cannot be loaded."""
        try:
            context = ssl.create_default_context(cafile=self.ca or None)
            if self.cert:
                context.load_cert_chain(self.cert, self.key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{error_prefix}TLS files: {exc}") from None
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
