"""Typed memberlist/Serf messages: golden packets decode to the right values and
encode back byte for byte (so field names, order and int widths match Go)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import messages as m
from pysyncer.gossip import serf_messages as sm

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "gossip"


def _golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def test_real_agent_ping_and_ack() -> None:
    ping = m.Ping.from_bytes(_golden("serf_ping.bin"))
    assert (ping.node, ping.source_node, ping.source_addr) == ("pyprobe", "g1", b"\x7f\0\0\1")
    assert ping.to_bytes() == _golden("serf_ping.bin")
    ours = m.Ping.from_bytes(_golden("py_ping.bin"))
    assert ours.to_bytes(sorted_fields=False) == _golden("py_ping.bin")
    parts, _ = wire.split_compound(_golden("serf_ack_compound.bin"))
    ack = m.AckResp.from_bytes(parts[0])
    alive = m.Alive.from_bytes(parts[1])
    assert ack.seq_no == 42 and ack.payload is not None and ack.payload[0] == 1
    assert (alive.node, alive.addr, alive.vsn) == ("g1", b"\x7f\0\0\1", b"\x01\x05\x02\x02\x05\x05")
    assert alive.meta is not None and wire.decode_tags(alive.meta) == {"role": "golden"}
    assert ack.to_bytes() == parts[0] and alive.to_bytes() == parts[1]


def test_real_agent_gossip_query_and_user_event() -> None:
    parts, _ = wire.split_compound(_golden("serf_gossip_compound.bin"))
    query = sm.decode_serf(parts[2][1:])
    event = sm.decode_serf(parts[3][1:])
    assert isinstance(query, sm.SerfQuery) and isinstance(event, sm.SerfUserEvent)
    assert query.filters is None and query.timeout == 1_000_000_000
    assert (query.name, query.payload, query.flags) == ("uptime", b"now", sm.QueryFlag.ACK)
    assert (event.name, event.payload, event.cc) == ("deploy", b"v1.2.3", True)
    assert m.serf_user_msg(query.to_bytes()) == parts[2]
    assert m.serf_user_msg(event.to_bytes()) == parts[3]


def test_real_agent_push_pull_reply() -> None:
    data = _golden("serf_push_pull_reply.bin")
    reply = m.decode_push_pull(data)
    assert reply.join and [n.name for n in reply.nodes] == ["g1"]
    assert reply.nodes[0].state == m.NodeStatus.ALIVE
    serf = sm.SerfPushPull.from_bytes(reply.user_state)
    assert serf.status_ltimes == {"g1": 0}  # before our join intent reached it
    assert len(serf.events) == 512 and serf.left_members == ()
    rebuilt = m.PushPull(reply.join, reply.nodes, serf.to_bytes())
    assert m.encode_push_pull(rebuilt) == data
    ours = _golden("py_push_pull_join.bin")
    assert m.encode_push_pull(m.decode_push_pull(ours), sorted_fields=False) == ours


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("layout_suspect.bin", m.Suspect),
        ("layout_dead.bin", m.Dead),
        ("layout_nack.bin", m.NackResp),
        ("layout_err.bin", m.ErrResp),
        ("layout_indirect_ping.bin", m.IndirectPingReq),
        ("layout_serf_join.bin", sm.SerfJoin),
        ("layout_serf_leave.bin", sm.SerfLeave),
        ("layout_serf_user_event.bin", sm.SerfUserEvent),
        ("layout_serf_query_response.bin", sm.SerfQueryResponse),
        ("layout_serf_key_request.bin", sm.KeyRequest),
        ("layout_serf_key_response.bin", sm.NodeKeyResponse),
    ],
)
def test_layout_messages_round_trip(name: str, cls: type[m.Ping]) -> None:
    data = _golden(name)
    message = cls.from_bytes(data)
    assert message.to_bytes() == data


def test_layout_values() -> None:
    assert m.Dead.from_bytes(_golden("layout_dead.bin")) == m.Dead(4, "n2", "n2")
    assert sm.SerfJoin.from_bytes(_golden("layout_serf_join.bin")).ltime == 2**40
    req = m.IndirectPingReq.from_bytes(_golden("layout_indirect_ping.bin"))
    assert req.nack and req.seq_no == 70000 and req.source_port == 7947
    keys = sm.NodeKeyResponse.from_bytes(_golden("layout_serf_key_response.bin"))
    assert keys.keys == ("a2V5MQ==", "a2V5Mg==")
    header, inner = sm.decode_relay(_golden("layout_serf_relay.bin"))
    assert (header.dest_port, header.dest_name) == (7946, "n3")
    assert sm.encode_relay(header, inner) == _golden("layout_serf_relay.bin")
    response = sm.decode_serf(inner)
    assert isinstance(response, sm.SerfQueryResponse) and response.payload is None


def test_omitempty_and_declared_order() -> None:
    ping = m.Ping(seq_no=1, node="n")
    assert ping.to_struct() == {"Node": "n", "SeqNo": 1}
    assert list(ping.to_struct(sorted_fields=False)) == ["SeqNo", "Node"]
    header = m.PushPullHeader(nodes=1, user_state_len=2, join=True)
    assert list(header.to_struct()) == ["Join", "Nodes", "UserStateLen"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x03",
        b"\x04\x81\xa4Port\xce\x00\x01\x00\x00",  # Port above uint16
        b"\x04\x81\xa4Node\x01",  # Node not a string
        b"\x04\x81\xa4Node\xa1\xff",  # not UTF-8
        b"\x00\x90",  # not a map
    ],
)
def test_bad_messages_raise_malformed(data: bytes) -> None:
    with pytest.raises(MalformedDataError):
        m.Alive.from_bytes(data) if data[:1] != b"\x00" else m.Ping.from_bytes(data)


def test_wrong_type_byte() -> None:
    with pytest.raises(MalformedDataError):
        m.Suspect.from_bytes(_golden("layout_dead.bin"))
    with pytest.raises(MalformedDataError):
        sm.decode_serf(b"\x06\x80")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_hostile_bytes_never_escape_as_other_errors(data: bytes) -> None:
    for decode in (sm.decode_serf, m.decode_push_pull, m.Alive.from_bytes, m.Ping.from_bytes):
        with contextlib.suppress(MalformedDataError):
            decode(data)
