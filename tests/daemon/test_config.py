"""Daemon configuration: precedence, parsing, one-line errors naming the key."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pysyncer.config import default_dc, load_config
from pysyncer.errors import ConfigError
from pysyncer.hostport import HostPort, parse_host_port

KEY = "2gMP72PkfHL27Hin35CtE0A/zbecC+nnk7Ie6R0irno="


def test_defaults() -> None:
    config = load_config({}, environ={})
    assert config.node == socket.gethostname()
    assert config.bind == HostPort("127.0.0.1", 30190)
    assert config.rpc_addr == HostPort("127.0.0.1", 30191)
    assert config.admin_addr == HostPort("127.0.0.1", 30300)
    assert config.sc_addr == ()
    assert config.embedded_registry
    assert config.plugin == "servicecomb"
    assert config.store == "embedded"
    assert config.encrypt is None
    assert config.gossip_protocol == 2 and config.gossip_label == ""
    assert config.dc == default_dc([])
    assert config.data_dir == Path("pysyncer-data") / config.node


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "pysyncer.toml"
    config_file.write_text('node = "from-file"\ndc = "file-dc"\nplugin = "eureka"\n')
    env = {"PYSYNCER_DC": "env-dc", "PYSYNCER_PLUGIN": "nacos"}
    config = load_config({"plugin": "consul"}, environ=env, config_file=config_file)
    assert (config.node, config.dc, config.plugin) == ("from-file", "env-dc", "consul")
    assert config.config_file == config_file


def test_config_file_from_env(tmp_path: Path) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('sc-addr = ["http://10.0.0.2:30100", "http://10.0.0.1:30100"]\n')
    config = load_config({}, environ={"PYSYNCER_CONFIG": str(config_file)})
    assert config.sc_addr == ("http://10.0.0.2:30100", "http://10.0.0.1:30100")
    assert not config.embedded_registry


def test_dc_is_shared_by_syncers_of_the_same_registry() -> None:
    a = load_config({"sc-addr": "http://b:30100,http://a:30100"}, environ={})
    b = load_config({"sc-addr": "http://a:30100, http://b:30100"}, environ={})
    c = load_config({"sc-addr": "http://c:30100"}, environ={})
    assert a.dc == b.dc != c.dc
    assert a.dc.startswith("dc-")


def test_lists_and_key() -> None:
    config = load_config({"join": "127.0.0.2:30190,127.0.0.3", "encrypt": KEY}, environ={})
    assert config.join == ("127.0.0.2:30190", "127.0.0.3")
    assert config.encryption_key() is not None
    assert len(config.encryption_key() or b"") == 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", HostPort("127.0.0.1", 80)),
        ("localhost", HostPort("localhost", 9)),
        ("[::1]:30190", HostPort("::1", 30190)),
        ("[::1]", HostPort("::1", 9)),
        ("example.org:0", HostPort("example.org", 0)),
    ],
)
def test_host_port(text: str, expected: HostPort) -> None:
    assert parse_host_port(text, default_port=9) == expected


@pytest.mark.parametrize("text", ["", ":80", "host:http", "host:70000", "::1", "[::1]x"])
def test_bad_host_port(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text, default_port=9)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"bind": "0.0.0.0:99999"}, "config key 'bind' (flag --bind): port '99999'"),
        ({"bind": "my-host:1"}, "config key 'bind': 'my-host' must be an IP address"),
        ({"encrypt": "not base64!"}, "config key 'encrypt' (flag --encrypt): is not valid"),
        ({"encrypt": "AAAA"}, "decodes to 3 bytes; a key must be 16, 24 or 32 bytes"),
        ({"store": "redis://x"}, "config key 'store' (flag --store): 'redis://x' must be"),
        ({"node": "two words"}, "config key 'node' (flag --node)"),
        ({"log-level": "loud"}, "config key 'log-level'"),
        ({"gossip-protocol": "1"}, "must be a memberlist protocol version from 2 to 5"),
        ({"origin-policy": "keep"}, "must be 'expire' or 'remove'"),
        ({"origin-grace": "-1"}, "must be a positive number of seconds"),
        ({"anti-entropy-interval": "soon"}, "is not a number of seconds"),
        ({"gossip-label": "x" * 256}, "at most 255 bytes"),
        ({"bogus": "1"}, "unknown setting 'bogus'"),
    ],
)
def test_errors_name_the_key(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(flags, environ={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"config key 'admin-addr' \(env PYSYNCER_ADMIN_ADDR\)"):
        load_config({}, environ={"PYSYNCER_ADMIN_ADDR": "x:y"})


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config({}, environ={}, config_file=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("node = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, environ={}, config_file=bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('colour = "blue"\n')
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_config({}, environ={}, config_file=unknown)


def test_adapter_settings_from_file_and_env(tmp_path: Path) -> None:
    config_file = tmp_path / "syncer.toml"
    config_file.write_text('plugin = "nacos"\n[adapter]\nnamespace = "prod"\npoll_interval = 2\n')
    config = load_config({}, {"PYSYNCER_ADAPTER_POLL_INTERVAL": "5"}, config_file)
    assert config.plugin == "nacos"
    assert config.adapter_settings == {"namespace": "prod", "poll-interval": "5"}
    assert load_config({}, {}).adapter_settings == {}


def test_adapter_table_must_be_a_table(tmp_path: Path) -> None:
    config_file = tmp_path / "syncer.toml"
    config_file.write_text('adapter = "eureka"\n')
    with pytest.raises(ConfigError, match="'adapter' must be a table"):
        load_config({}, {}, config_file)


def test_registry_url_and_kind_with_their_aliases(tmp_path: Path) -> None:
    main = load_config({"registry-url": "http://a:1", "registry-kind": "consul"}, environ={})
    assert (main.registry_url, main.registry_kind) == (("http://a:1",), "consul")
    assert (main.sc_addr, main.plugin) == (main.registry_url, main.registry_kind)
    env = {"PYSYNCER_SC_ADDR": "http://b:2", "PYSYNCER_PLUGIN": "zookeeper"}
    aliased = load_config({}, environ=env)
    assert (aliased.registry_url, aliased.registry_kind) == (("http://b:2",), "zookeeper")
    config_file = tmp_path / "syncer.toml"
    config_file.write_text('registry-url = ["http://c:3"]\nsc-addr = ["http://c:3"]\n')
    same = load_config({}, environ={}, config_file=config_file)
    assert same.registry_url == ("http://c:3",)
    # a flag beats the env var, whichever name each uses
    assert load_config({"registry-kind": "nacos"}, environ=env).registry_kind == "nacos"


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        (
            {"registry-kind": "consul", "plugin": "nacos"},
            {},
            "config key 'registry-kind' (flag --registry-kind) and its alias 'plugin' "
            "(flag --plugin) differ",
        ),
        (
            {},
            {"PYSYNCER_REGISTRY_URL": "http://a:1", "PYSYNCER_SC_ADDR": "http://b:2"},
            "config key 'registry-url' (env PYSYNCER_REGISTRY_URL) and its alias 'sc-addr' "
            "(env PYSYNCER_SC_ADDR) differ",
        ),
    ],
)
def test_an_alias_and_its_main_name_must_agree(
    flags: dict[str, str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(flags, environ=environ)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_layer_settings_come_from_the_one_table() -> None:
    config = load_config({"join": "127.0.0.2", "store": "etcd://[::1]:2379?prefix=/p/"}, {})
    gossip, sync = config.gossip(), config.sync()
    assert gossip.join == (HostPort("127.0.0.2", 30190),)
    assert (gossip.bind, gossip.node) == (config.bind, config.node)
    assert sync.store.kind == "etcd" and sync.store.endpoints == (HostPort("::1", 2379),)
    assert config.store == "etcd://[::1]:2379?prefix=/p/"
    assert (sync.origin_grace, sync.anti_entropy_interval) == (3600.0, 60.0)
    assert sync.registry.embedded and config.embedded_registry
