"""``pysyncer tls ca create`` / ``tls cert create``, the TLS and exposure settings, and the
security watch's warnings.

The commands run through :func:`pysyncer.cli.main` and write real files: modes, names,
subject alternative names and refusals are read back. Settings are loaded with
:func:`pysyncer.config.load_config`; an ``--insecure`` daemon is built (not started: no
port is bound) to read its health answer and warnings.
"""

from __future__ import annotations

import base64
import datetime
import logging
import os
from pathlib import Path

import pytest
from cryptography import x509

from pysyncer.cli import main
from pysyncer.config import load_config
from pysyncer.errors import ConfigError
from pysyncer.rpc.identity import Identity, certificate_identity
from pysyncer.security import EXPIRY_WARNING, SecurityWatch
from pysyncer.tlsgen import TlsFileError, create_ca, create_cert


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_and_cert_create_write_named_files_with_private_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir, out = tmp_path / "ca", tmp_path / "certs"
    assert main(["tls", "ca", "create", "--dir", str(ca_dir), "--days", "30"]) == 0
    assert main(["tls", "cert", "create", "--dc", "dc-east", "--node", "n1",
                 "--ca-dir", str(ca_dir), "--out-dir", str(out), "--days", "7",
                 "--san", "10.0.0.5", "--san", "syncer.example"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "spiffe://pysyncer/dc/dc-east/node/n1" in printed and "n1.dc-east.pysyncer" in printed
    assert sorted(p.name for p in ca_dir.iterdir()) == ["ca-key.pem", "ca.pem"]
    assert sorted(p.name for p in out.iterdir()) == ["dc-east-n1-key.pem", "dc-east-n1.pem"]
    for key in (ca_dir / "ca-key.pem", out / "dc-east-n1-key.pem"):
        assert os.stat(key).st_mode & 0o777 == 0o600
    ca, cert = _cert(ca_dir / "ca.pem"), _cert(out / "dc-east-n1.pem")
    cert.verify_directly_issued_by(ca)
    assert certificate_identity(cert) == Identity("dc-east", "n1")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["n1.dc-east.pysyncer", "syncer.example"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=7) <= lifetime <= datetime.timedelta(days=7, minutes=6)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_commands_refuse_to_overwrite_and_bad_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tls", "ca", "create", "--dir", str(tmp_path)]) == 0
    before = (tmp_path / "ca.pem").read_bytes()
    assert main(["tls", "ca", "create", "--dir", str(tmp_path)]) == 1
    assert "exists: refusing to overwrite it" in capsys.readouterr().err
    assert (tmp_path / "ca.pem").read_bytes() == before
    common = ["--ca-dir", str(tmp_path), "--out-dir", str(tmp_path)]
    assert main(["tls", "cert", "create", "--dc", "a", "--node", "n", *common]) == 0
    assert main(["tls", "cert", "create", "--dc", "a", "--node", "n", *common]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["tls", "cert", "create", "--dc", "a.b", "--node", "n", *common]) == 1
    assert "must not contain '.'" in capsys.readouterr().err
    assert main(["tls", "cert", "create", "--dc", "a", "--node", "m", "--ca-dir",
                 str(tmp_path / "none"), "--out-dir", str(tmp_path)]) == 1  # fmt: skip
    assert "tls ca create" in capsys.readouterr().err
    with pytest.raises(TlsFileError):
        create_ca(tmp_path)


# -- settings ---------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    create_ca(tmp_path)
    create_cert("dc-a", "n1", ca_dir=tmp_path, out_dir=tmp_path)
    (tmp_path / "gossip.key").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    return tmp_path


def _tls(pki: Path) -> dict[str, str]:
    return {
        "tls-ca": str(pki / "ca.pem"),
        "tls-cert": str(pki / "dc-a-n1.pem"),
        "tls-key": str(pki / "dc-a-n1-key.pem"),
    }


def test_loopback_needs_nothing_and_a_network_address_needs_both(pki: Path) -> None:
    base = {"node": "n1", "dc": "dc-a", "data-dir": str(pki / "data")}
    assert load_config(base, environ={}).insecure_reasons() == []
    exposed = {**base, "bind": "0.0.0.0:7946"}
    with pytest.raises(ConfigError, match=r"'encrypt-file' .* and 'tls-ca'"):
        load_config(exposed, environ={})
    with pytest.raises(ConfigError, match="set 'tls-ca', 'tls-cert' and 'tls-key', or"):
        load_config({**exposed, "encrypt-file": str(pki / "gossip.key")}, environ={})
    with pytest.raises(ConfigError, match=r"config key 'rpc-addr'.*set 'encrypt-file'"):
        load_config({**base, **_tls(pki), "rpc-addr": "10.0.0.1:30191"}, environ={})
    secure = load_config({**exposed, **_tls(pki), "encrypt-file": str(pki / "gossip.key")},
                         environ={})  # fmt: skip
    assert secure.insecure_reasons() == [] and secure.tls
    assert secure.encryption_key() == base64.b64decode((pki / "gossip.key").read_text())
    files = secure.tls_files()
    assert files is not None and files.identity == Identity("dc-a", "n1")
    # a keyring file in the data directory is gossip encryption too
    (pki / "data").mkdir()
    (pki / "data" / "keyring.json").write_text("[]")
    assert load_config({**exposed, **_tls(pki)}, environ={}).gossip_encrypted()


def test_insecure_names_what_is_exposed(pki: Path) -> None:
    env = {"PYSYNCER_INSECURE": "true"}
    config = load_config(
        {"node": "n1", "bind": "0.0.0.0:7946", "rpc-addr": "0.0.0.0:30191",
         "data-dir": str(pki / "data")}, environ=env,
    )  # fmt: skip
    assert config.insecure
    assert config.insecure_reasons() == [
        "gossip on 0.0.0.0:7946 is not encrypted",
        "sync RPC on 0.0.0.0:30191 is not TLS",
    ]
    with pytest.raises(ConfigError, match="PYSYNCER_INSECURE"):
        load_config({"node": "n1"}, environ={"PYSYNCER_INSECURE": "maybe"})


def test_tls_settings_go_together_and_key_files_are_checked(pki: Path) -> None:
    base = {"node": "n1", "dc": "dc-a"}
    with pytest.raises(ConfigError, match="'tls-ca', 'tls-cert' and 'tls-key' go together"):
        load_config({**base, "tls-cert": str(pki / "dc-a-n1.pem")}, environ={})
    with pytest.raises(ConfigError, match="'encrypt' and 'encrypt-file' are both set"):
        key = (pki / "gossip.key").read_text().strip()
        load_config({**base, "encrypt": key, "encrypt-file": str(pki / "gossip.key")}, environ={})
    (pki / "bad.key").write_text("not base64!")
    with pytest.raises(ConfigError, match=r"'encrypt-file': the key in .*bad.key is not valid"):
        load_config({**base, "encrypt-file": str(pki / "bad.key")}, environ={})
    other = load_config({"node": "n2", "dc": "dc-a", **_tls(pki)}, environ={})
    with pytest.raises(ConfigError, match="names node n1 of data center dc-a, but this syncer"):
        other.tls_files()


def test_an_insecure_daemon_says_so_in_health_and_logs(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pysyncer.daemon import Daemon

    config = load_config(
        {"node": "n1", "dc": "dc-a", "bind": "0.0.0.0:0", "insecure": True,
         "data-dir": str(pki / "data"), **_tls(pki)}, environ={},
    )  # fmt: skip
    daemon = Daemon(config)  # built, not started: nothing is bound
    assert daemon.presenter.health()["insecure"] is True
    with caplog.at_level(logging.WARNING, logger="pysyncer.security"):
        daemon.security.check()
    assert "running --insecure: gossip on 0.0.0.0:0 is not encrypted" in caplog.text
    safe = Daemon(load_config({"node": "n1", "data-dir": str(pki / "data")}, environ={}))
    assert safe.presenter.health()["insecure"] is False


def test_the_watch_warns_hourly_when_insecure_and_daily_near_expiry(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pysyncer.rpc.tls import TlsFiles

    files = TlsFiles(pki / "ca.pem", pki / "dc-a-n1.pem", pki / "dc-a-n1-key.pem")
    expires = files.current().cert_expires
    now = [expires - EXPIRY_WARNING - 10]
    watch = SecurityWatch(files, ["gossip on 0.0.0.0:1 is not encrypted"], clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="pysyncer.security"):
        watch.check()
        assert caplog.text.count("running --insecure") == 1 and "expires in" not in caplog.text
        now[0] += 20  # inside the last 30 days of the certificate
        watch.check()
        assert caplog.text.count("the certificate expires in 30 days") == 1
        now[0] += 3600  # an hour later: the insecure warning again, the expiry not yet
        watch.check()
        assert caplog.text.count("running --insecure") == 2
        assert caplog.text.count("the certificate expires in") == 1
        now[0] = expires + 1
        watch.check()
        assert "the certificate expired at" in caplog.text


def test_sighup_looks_at_the_tls_files_at_once(pki: Path) -> None:
    from pysyncer.daemon import Daemon

    config = load_config({"node": "n1", "dc": "dc-a", "data-dir": str(pki / "data"), **_tls(pki)},
                         environ={})  # fmt: skip
    daemon = Daemon(config)  # built, not started
    assert daemon.tls is not None and daemon.tls.reloads == 0
    staging = pki / "staging"
    made = create_cert("dc-a", "n1", ca_dir=pki, out_dir=staging)
    os.replace(made.key, pki / "dc-a-n1-key.pem")
    os.replace(made.cert, pki / "dc-a-n1.pem")
    daemon.reload(config)  # what SIGHUP does with the configuration read again
    assert daemon.tls.reloads == 1
    assert daemon.tls.current().cert == (pki / "dc-a-n1.pem").read_bytes()
