# mypy: disable-error-code="import-untyped"
"""Syncer identities in certificates, and the sync RPC's mutual TLS with reloaded files.

The SAN scheme (``spiffe://pysyncer/dc/<dc>/node/<node>`` and ``<node>.<dc>.pysyncer``)
is parsed and refused field by field; a real grpc.aio server with :class:`TlsFiles`
accepts only clients whose certificate names a syncer, a client reaches a server only
when its certificate names the data center and node dialled, and new files are taken
at the next handshake.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pysyncer.errors import ConfigError
from pysyncer.rpc import SyncClient, SyncServer, UnavailableError
from pysyncer.rpc.errors import RpcError
from pysyncer.rpc.identity import (
    Identity,
    IdentityError,
    certificate_identity,
    check_names,
    dns_name,
    identity_of_pem,
    parse_spiffe_uri,
    spiffe_uri,
)
from pysyncer.rpc.tls import TlsConfig, TlsFiles
from pysyncer.tlsgen import create_ca, create_cert
from tests.rpc.test_rpc import CART, MemorySource

DC = "east"  # the data center MemorySource serves


def test_names_round_trip_through_the_uri() -> None:
    assert spiffe_uri("dc-a", "n1") == "spiffe://pysyncer/dc/dc-a/node/n1"
    assert dns_name("dc-a", "Node1.example") == "node1.example.dc-a.pysyncer"
    assert parse_spiffe_uri("spiffe://pysyncer/dc/dc-a/node/n1") == Identity("dc-a", "n1")
    odd = Identity("dc_x", "host:1")
    assert parse_spiffe_uri(odd.uri) == odd


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://pysyncer/dc/a/node/b", "not a spiffe"),
        ("spiffe://other/dc/a/node/b", "trust domain 'other'"),
        ("spiffe://pysyncer/dc/a/node", "is not spiffe://pysyncer/dc/<dc>/node/<node>"),
        ("spiffe://pysyncer/dc/a/node/b/extra", "is not spiffe://"),
        ("spiffe://pysyncer/node/a/dc/b", "is not spiffe://"),
        ("spiffe://pysyncer/dc/a.b/node/n", "must not contain '.'"),
        ("spiffe://pysyncer/dc//node/n", "is empty"),
    ],
)
def test_malformed_uris_are_refused(uri: str, reason: str) -> None:
    with pytest.raises(IdentityError, match=reason.replace("(", r"\(")):
        parse_spiffe_uri(uri)


def test_names_a_certificate_cannot_carry_are_refused() -> None:
    for dc, node in (("a.b", "n"), ("a/b", "n"), ("a", "n b"), ("a", ""), ("a", "n..x")):
        with pytest.raises(IdentityError):
            check_names(dc, node)


def _self_signed(sans: list[x509.GeneralName]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_certificate_identity_needs_exactly_one_syncer() -> None:
    uri = x509.UniformResourceIdentifier
    one = _self_signed([uri("spiffe://pysyncer/dc/a/node/n"), x509.DNSName("n.a.pysyncer")])
    assert certificate_identity(one) == Identity("a", "n")
    with pytest.raises(IdentityError, match="no subject alternative names"):
        certificate_identity(_self_signed([]))
    with pytest.raises(IdentityError, match="names no syncer"):
        certificate_identity(_self_signed([x509.DNSName("n.a.pysyncer")]))
    two = _self_signed([uri("spiffe://pysyncer/dc/a/node/n"), uri("spiffe://pysyncer/dc/b/node/n")])
    with pytest.raises(IdentityError, match="several syncers"):
        certificate_identity(two)
    with pytest.raises(IdentityError, match="not a PEM certificate"):
        identity_of_pem(b"junk")


# -- mutual TLS with identities over a real server ----------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    create_ca(tmp_path / "ca")
    create_ca(tmp_path / "other-ca")
    for dc, node in ((DC, "n1"), ("west", "w1"), (DC, "n2")):
        create_cert(dc, node, ca_dir=tmp_path / "ca", out_dir=tmp_path)
    create_cert("west", "w1", ca_dir=tmp_path / "other-ca", out_dir=tmp_path / "other")
    return tmp_path


def _files(pki: Path, dc: str, node: str, *, ca: str = "ca", where: str = "") -> TlsFiles:
    base = pki / where if where else pki
    return TlsFiles(pki / ca / "ca.pem", base / f"{dc}-{node}.pem", base / f"{dc}-{node}-key.pem")


async def test_a_client_reaches_the_syncer_its_certificate_names(pki: Path) -> None:
    source = MemorySource()
    await source.put(CART, "i1")
    async with SyncServer(source, "127.0.0.1", 0, tls=_files(pki, DC, "n1")) as server:
        client_tls = _files(pki, "west", "w1")
        async with SyncClient(
            server.address, tls=client_tls, dc=DC, server_name=dns_name(DC, "n1"), timeout=5
        ) as client:
            assert (await client.health()).dc == DC
            revision, _, _ = await client.get_digests()
            assert revision == 1
        # the same server dialled as another node, or as another data center: refused
        for name in (dns_name(DC, "n2"), dns_name("west", "n1")):
            async with SyncClient(
                server.address, tls=client_tls, server_name=name, timeout=3
            ) as client:
                with pytest.raises(UnavailableError):
                    await client.health()


async def test_a_server_refuses_clients_without_a_syncer_certificate(pki: Path) -> None:
    async with SyncServer(MemorySource(), "127.0.0.1", 0, tls=_files(pki, DC, "n1")) as server:
        name = dns_name(DC, "n1")
        async with SyncClient(server.address, timeout=3) as plain:
            with pytest.raises(UnavailableError):
                await plain.health()
        with pytest.raises(ConfigError, match="not signed by the CA"):
            _files(pki, "west", "w1", where="other")  # another CA signed it
        foreign = TlsConfig(
            str(pki / "ca" / "ca.pem"),
            str(pki / "other" / "west-w1.pem"),
            str(pki / "other" / "west-w1-key.pem"),
            server_name=name,
        )
        async with SyncClient(server.address, tls=foreign, timeout=3) as client:
            with pytest.raises(UnavailableError):
                await client.health()
        # signed by the right CA but naming no syncer: the handshake passes, the call not
        plain_cert = _plain_leaf(pki)
        no_identity = TlsConfig(
            str(pki / "ca" / "ca.pem"), str(plain_cert[0]), str(plain_cert[1]), server_name=name
        )
        async with SyncClient(server.address, tls=no_identity, timeout=3) as client:
            with pytest.raises(RpcError, match="names no syncer"):
                await client.health()
        assert server.stats.errors is not None and server.stats.errors["unauthenticated"] == 1


def _plain_leaf(pki: Path) -> tuple[Path, Path]:
    """A client certificate the pool's CA signed, without a syncer identity."""
    from cryptography.hazmat.primitives import serialization

    ca_cert = x509.load_pem_x509_certificate((pki / "ca" / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key(
        (pki / "ca" / "ca-key.pem").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("plain")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = pki / "plain.pem", pki / "plain-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_a_certificate_of_another_data_center_exports_nothing(pki: Path) -> None:
    """A server whose certificate names west while it serves east answers no call."""
    async with (
        SyncServer(MemorySource(), "127.0.0.1", 0, tls=_files(pki, "west", "w1")) as server,
        SyncClient(
            server.address,
            tls=_files(pki, DC, "n1"),
            server_name=dns_name("west", "w1"),
            timeout=3,
        ) as client,
    ):
        with pytest.raises(RpcError, match="names data center 'west', not 'east'"):
            await client.health()


def test_tls_files_refuse_a_certificate_of_another_syncer_at_start(pki: Path) -> None:
    with pytest.raises(ConfigError, match="names node n1 of data center east, but this syncer"):
        TlsFiles(
            pki / "ca" / "ca.pem",
            pki / f"{DC}-n1.pem",
            pki / f"{DC}-n1-key.pem",
            expected=Identity(DC, "n9"),
        )
    with pytest.raises(ConfigError, match="cannot be read"):
        TlsFiles(pki / "ca" / "ca.pem", pki / "missing.pem", pki / f"{DC}-n1-key.pem")
    with pytest.raises(ConfigError, match="is not the key of the certificate"):
        TlsFiles(pki / "ca" / "ca.pem", pki / f"{DC}-n1.pem", pki / f"{DC}-n2-key.pem")


def _replace(pki: Path, dc: str, node: str, staging: Path) -> None:
    """Swap in the files of a freshly made certificate (renamed over the old ones)."""
    new = create_cert(dc, node, ca_dir=pki / "ca", out_dir=staging)
    os.replace(new.cert, pki / f"{dc}-{node}.pem")
    os.replace(new.key, pki / f"{dc}-{node}-key.pem")


async def test_new_files_are_used_from_the_next_handshake(pki: Path) -> None:
    files = _files(pki, DC, "n1")
    before = files.current()
    async with SyncServer(MemorySource(), "127.0.0.1", 0, tls=files) as server:
        client_tls = _files(pki, "west", "w1")
        name = dns_name(DC, "n1")
        async with SyncClient(server.address, tls=client_tls, server_name=name) as c:
            await c.health()
        _replace(pki, DC, "n1", pki / "staging")
        async with SyncClient(server.address, tls=client_tls, server_name=name) as c:
            await c.health()  # the fetcher handed grpc the new certificate
        after = files.current()
        assert after.cert != before.cert and files.reloads == 1
        # a half-written (broken) certificate is refused; the one in use stays
        (pki / f"{DC}-n1.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nbroken")
        async with SyncClient(server.address, tls=client_tls, server_name=name) as c:
            await c.health()
        assert files.current() is after and files.reload_failures == 1
