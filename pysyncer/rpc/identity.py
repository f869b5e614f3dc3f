"""The identity of a syncer in its TLS certificate: data center and node, named in SANs.

Owns the naming scheme, in one place. A syncer certificate carries two subject
alternative names:

* the URI ``spiffe://pysyncer/dc/<dc>/node/<node>`` (trust domain :data:`TRUST_DOMAIN`),
  which a server reads from the client certificate of every call;
* the DNS name ``<node>.<dc>.pysyncer`` (:func:`dns_name`), which a client asks the TLS
  handshake to verify (``grpc.ssl_target_name_override``) when it dials the syncer that
  gossip says serves ``<dc>``: the handshake fails unless the CA signed a certificate
  for that data center and node.

A data center name must not contain a dot (it would make ``<node>.<dc>`` ambiguous) and
neither name may contain ``/``; :func:`check_names` says why a pair cannot be certified.
Pure: parses and builds names and reads certificates with ``cryptography``; no gRPC, no
files, no sync state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

from cryptography import x509

from pysyncer.errors import PysyncerError

__all__ = [
    "DNS_SUFFIX",
    "TRUST_DOMAIN",
    "Identity",
    "IdentityError",
    "certificate_identity",
    "check_names",
    "dns_name",
    "identity_of_pem",
    "parse_spiffe_uri",
    "spiffe_uri",
]

TRUST_DOMAIN: Final = "pysyncer"
"""The SPIFFE trust domain of every syncer identity (one CA per pool of syncers)."""
DNS_SUFFIX: Final = "pysyncer"
"""The last label of a syncer's DNS name: ``<node>.<dc>.pysyncer``."""
_SCHEME: Final = "spiffe://"


class IdentityError(PysyncerError, ValueError):
    """A certificate or name does not carry a valid syncer identity."""


@dataclass(frozen=True, slots=True)
class Identity:
    """The data center and node a certificate was issued to."""

    dc: str
    node: str

    @property
    def uri(self) -> str:
        return spiffe_uri(self.dc, self.node)

    @property
    def dns(self) -> str:
        return dns_name(self.dc, self.node)

    def __str__(self) -> str:
        return f"node {self.node} of data center {self.dc}"


def check_names(dc: str, node: str) -> None:
    """Raise IdentityError when ``dc``/``node`` cannot be named in a certificate."""
    for what, name in (("data center", dc), ("node", node)):
        if not name:
            raise IdentityError(f"the {what} name is empty")
        if "/" in name or not name.isascii() or not name.isprintable() or " " in name:
            raise IdentityError(
                f"the {what} name {name!r} must be printable ASCII without '/' or spaces"
            )
        if name.startswith(".") or name.endswith(".") or ".." in name:
            raise IdentityError(f"the {what} name {name!r} has an empty DNS label")
    if "." in dc:
        raise IdentityError(f"the data center name {dc!r} must not contain '.'")


def spiffe_uri(dc: str, node: str) -> str:
    """``spiffe://pysyncer/dc/<dc>/node/<node>`` (names percent-encoded where needed)."""
    check_names(dc, node)
    return f"{_SCHEME}{TRUST_DOMAIN}/dc/{quote(dc, safe='')}/node/{quote(node, safe='')}"


def dns_name(dc: str, node: str) -> str:
    """``<node>.<dc>.pysyncer``, lower case (DNS names compare without case)."""
    check_names(dc, node)
    return f"{node}.{dc}.{DNS_SUFFIX}".lower()


def parse_spiffe_uri(uri: str) -> Identity:
    """The identity a syncer URI names; IdentityError when it is not one."""
    if not uri.startswith(_SCHEME):
        raise IdentityError(f"{uri!r} is not a spiffe:// URI")
    parts = uri[len(_SCHEME) :].split("/")
    if len(parts) != 5 or parts[1] != "dc" or parts[3] != "node":
        raise IdentityError(f"{uri!r} is not spiffe://{TRUST_DOMAIN}/dc/<dc>/node/<node>")
    if parts[0] != TRUST_DOMAIN:
        raise IdentityError(f"{uri!r} is of trust domain {parts[0]!r}, not {TRUST_DOMAIN!r}")
    identity = Identity(unquote(parts[2]), unquote(parts[4]))
    check_names(identity.dc, identity.node)
    return identity


def certificate_identity(cert: x509.Certificate) -> Identity:
    """The one syncer identity of ``cert`` (its ``spiffe://pysyncer/...`` URI SAN).

    IdentityError when it has none, or several naming different syncers.
    """
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise IdentityError("the certificate has no subject alternative names") from None
    uris = [
        u
        for u in sans.value.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith(_SCHEME)
    ]
    if not uris:
        raise IdentityError(
            f"the certificate names no syncer (no spiffe://{TRUST_DOMAIN}/dc/... URI)"
        )
    found = {parse_spiffe_uri(uri) for uri in uris}
    if len(found) > 1:
        names = ", ".join(sorted(str(i) for i in found))
        raise IdentityError(f"the certificate names several syncers: {names}")
    return found.pop()


def identity_of_pem(pem: bytes) -> Identity:
    """The syncer identity of the first certificate of a PEM chain."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise IdentityError(f"not a PEM certificate: {exc}") from None
    return certificate_identity(cert)
