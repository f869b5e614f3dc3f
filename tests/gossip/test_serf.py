"""The Serf layer: intents, tags, user events, queries, push/pull state, and a simulated
30-member pool running the real GossipNode + Serf code on virtual time.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Hashable
from dataclasses import replace
from pathlib import Path

import pytest

from pysyncer._core import wire
from pysyncer.gossip import serf_messages as sm
from pysyncer.gossip.clock import Clock, VirtualClock
from pysyncer.gossip.membership import NodeStatus, RemoteNodeState
from pysyncer.gossip.messages import ip_bytes
from pysyncer.gossip.node import Address, GossipNode, NodeConfig
from pysyncer.gossip.serf import (
    DEFAULT_COORDINATE_PAYLOAD,
    EventType,
    MemberEvent,
    MemberStatus,
    QueryEvent,
    QueryTooLargeError,
    Serf,
    SerfError,
    SerfEvent,
    TagsTooLargeError,
    UserEvent,
    UserEventTooLargeError,
    decode_filter,
    encode_node_filter,
    encode_tag_filter,
)
from pysyncer.gossip.simulator import Simulation
from pysyncer.gossip.timing import LAN, GossipProfile, default_query_timeout

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "gossip"
VSN = bytes((1, 5, 2, 2, 5, 4))


class FakeNetwork:
    def __init__(self) -> None:
        self.sent: list[tuple[Address, bytes]] = []

    def send_packet(self, addr: Address, data: bytes) -> None:
        self.sent.append((addr, data))

    async def exchange(self, addr: Address, message: bytes, timeout: float) -> bytes | None:
        raise ConnectionRefusedError("no streams in unit tests")


class Harness:
    """One Serf + GossipNode on a virtual clock and a recording network."""

    def __init__(
        self, name: str = "a", tags: dict[str, str] | None = None, profile: GossipProfile = LAN
    ) -> None:
        self.clock: VirtualClock[Hashable] = VirtualClock()
        self.network = FakeNetwork()
        self.events: list[SerfEvent] = []
        self.serf = Serf(name, tags or {"role": "test"}, profile, self.clock, random.Random(1))
        self.serf.subscribe(self.events.append)
        config = NodeConfig(name, ("127.0.0.1", 7946), profile)
        self.node = GossipNode(config, self.clock, self.network, self.serf, random.Random(2))
        self.serf.attach(self.node)

    def alive(self, name: str, tags: dict[str, str] | None = None, incarnation: int = 1) -> None:
        """memberlist hears that ``name`` is alive (notify_join / notify_update)."""
        index = int(name[1:]) if name[1:].isdigit() else 9
        self.node.membership.alive(
            RemoteNodeState(
                name,
                ip_bytes(f"10.0.0.{index + 1}"),
                7946,
                wire.encode_tags(tags or {"role": "peer"}),
                incarnation,
                NodeStatus.ALIVE,
                VSN,
            )
        )

    def dead(self, name: str, graceful: bool = False) -> None:
        state = self.node.membership.node_map[name]
        self.node.membership.dead(name, state.incarnation, name if graceful else self.serf.name)

    def status(self, name: str) -> MemberStatus | None:
        member = self.serf.member(name)
        return None if member is None else member.status

    def member_events(self) -> list[tuple[EventType, str]]:
        return [(e.type, e.member.name) for e in self.events if isinstance(e, MemberEvent)]

    def user_events(self) -> list[UserEvent]:
        return [e for e in self.events if isinstance(e, UserEvent)]


# -- wire details ----------------------------------------------------------------------


def test_ack_payload_is_the_agents_default_coordinate() -> None:
    golden = (GOLDEN / "serf_ack_compound.bin").read_bytes()
    assert DEFAULT_COORDINATE_PAYLOAD in golden
    h = Harness()
    assert h.serf.ack_payload() == DEFAULT_COORDINATE_PAYLOAD


def test_filters_round_trip() -> None:
    assert decode_filter(encode_node_filter(["a", "b"])) == ["a", "b"]
    assert decode_filter(encode_tag_filter("role", "^web")) == ("tag", "role", "^web")
    # go-msgpack 0.5 writes filterTag{Tag, Expr} with sorted keys
    assert encode_tag_filter("r", "x") == b"\x01\x82\xa4Expr\xa1x\xa3Tag\xa1r"


def test_local_state_has_the_serf_type_byte_and_round_trips() -> None:
    a = Harness("a")
    a.alive("n1")
    a.serf.user_event("deploy", b"v1")
    a.serf.user_event("deploy", b"v2")
    a.serf.force_leave("n1")  # alive -> leaving; it goes on the left list once memberlist agrees
    a.dead("n1", graceful=True)
    raw = a.serf.local_state(join=False)
    assert raw[0] == sm.SerfMessageType.PUSH_PULL
    state = sm.SerfPushPull.from_bytes(raw)
    assert len(state.events) == LAN.event_buffer
    assert state.left_members == ("n1",)
    assert set(state.status_ltimes) == {"a", "n1"}

    b = Harness("b")
    b.serf.merge_remote_state(raw, join=False)
    assert b.serf.member_clock.time >= state.ltime
    assert b.serf.event_clock.time >= state.event_ltime - 1
    assert [(e.name, e.payload) for e in b.user_events()] == [("deploy", b"v1"), ("deploy", b"v2")]
    assert [(e.name, e.payload) for e in b.serf.recent_events()] == [
        ("deploy", b"v1"),
        ("deploy", b"v2"),
    ]
    # the intents wait for memberlist's news: n1 shows up leaving, not alive
    b.alive("n1")
    assert b.status("n1") == MemberStatus.LEAVING
    # a second merge replays nothing
    b.serf.merge_remote_state(raw, join=False)
    assert len(b.user_events()) == 2


def test_join_with_ignore_old_skips_earlier_events() -> None:
    a = Harness("a")
    a.serf.user_event("old", b"")
    raw = a.serf.local_state(join=True)
    b = Harness("b")
    b.serf._delegate.ignore_old_events = (
        True  # what Serf.join(ignore_old=True) sets around the join
    )
    b.serf.merge_remote_state(raw, join=True)
    assert b.user_events() == []


def test_bad_remote_state_is_counted_not_raised() -> None:
    h = Harness()
    h.serf.merge_remote_state(b"\x02\xc1", join=False)
    h.serf.merge_remote_state(b"\x03\x80", join=False)
    assert h.serf.stats["push_pull_dropped"] == 2


# -- tags ------------------------------------------------------------------------------


def test_tags_are_node_meta_and_updates_are_advertised() -> None:
    h = Harness(tags={"role": "web", "dc": "1"})
    assert h.serf.node_meta(512) == wire.encode_tags({"role": "web", "dc": "1"})
    assert h.serf.local_member().tags == {"role": "web", "dc": "1"}
    incarnation = h.node.membership.local.incarnation
    h.serf.set_tags({"role": "db"})
    assert h.node.membership.local.meta == wire.encode_tags({"role": "db"})
    assert h.node.membership.local.incarnation > incarnation
    assert h.serf.local_member().tags == {"role": "db"}
    assert (EventType.MEMBER_UPDATE, "a") in h.member_events()
    with pytest.raises(TagsTooLargeError) as info:
        h.serf.set_tags({"big": "x" * 600})
    assert isinstance(info.value, ValueError) and isinstance(info.value, SerfError)
    assert h.serf.tags == {"role": "db"}  # unchanged
    with pytest.raises(TagsTooLargeError):
        Serf("z", {"big": "x" * 600}, LAN, h.clock)


def test_remote_tag_update_and_bad_meta() -> None:
    h = Harness()
    h.alive("n1", {"role": "web"})
    h.alive("n1", {"role": "db"}, incarnation=2)
    member = h.serf.member("n1")
    assert member is not None
    assert member.tags == {"role": "db"}
    assert (member.protocol_min, member.protocol_max, member.delegate_cur) == (1, 5, 4)
    assert member.addr == "10.0.0.2" and member.port == 7946
    assert h.member_events()[-1] == (EventType.MEMBER_UPDATE, "n1")
    h.node.membership.alive(
        RemoteNodeState("n2", ip_bytes("10.0.0.3"), 7946, b"\xff\xc1", 1, NodeStatus.ALIVE, VSN)
    )
    bad = h.serf.member("n2")
    assert bad is not None and bad.tags == {} and bad.status == MemberStatus.ALIVE
    assert h.serf.stats["bad_tags"] == 1


# -- intents ---------------------------------------------------------------------------


def intent(message: sm.SerfJoin | sm.SerfLeave) -> bytes:
    return message.to_bytes()


def test_join_and_leave_intents_are_ordered_by_lamport_time() -> None:
    h = Harness()
    h.alive("n1")
    assert h.status("n1") == MemberStatus.ALIVE
    h.serf.notify_msg(intent(sm.SerfJoin(10, "n1")))
    assert h.serf.member_clock.time == 11
    queued = len(h.serf.intents)
    h.serf.notify_msg(intent(sm.SerfLeave(5, "n1")))  # older than the join: ignored
    assert h.status("n1") == MemberStatus.ALIVE
    assert len(h.serf.intents) == queued  # and not rebroadcast
    h.serf.notify_msg(intent(sm.SerfLeave(12, "n1")))
    assert h.status("n1") == MemberStatus.LEAVING
    h.serf.notify_msg(intent(sm.SerfLeave(12, "n1")))  # duplicate: no rebroadcast loop
    h.serf.notify_msg(intent(sm.SerfJoin(13, "n1")))  # a newer join wins over the leave
    assert h.status("n1") == MemberStatus.ALIVE
    h.serf.notify_msg(intent(sm.SerfLeave(14, "n1")))
    h.dead("n1", graceful=True)
    assert h.status("n1") == MemberStatus.LEFT
    assert h.member_events()[-1] == (EventType.MEMBER_LEAVE, "n1")


def test_intents_before_memberlist_news_are_buffered() -> None:
    h = Harness()
    h.serf.notify_msg(intent(sm.SerfLeave(7, "n1")))
    assert h.serf.member("n1") is None
    h.alive("n1")
    assert h.status("n1") == MemberStatus.LEAVING
    h.dead("n1")
    assert h.status("n1") == MemberStatus.LEFT
    # a buffered join intent only sets the status time
    h.serf.notify_msg(intent(sm.SerfJoin(20, "n2")))
    h.alive("n2")
    assert h.status("n2") == MemberStatus.ALIVE
    h.serf.notify_msg(intent(sm.SerfLeave(19, "n2")))
    assert h.status("n2") == MemberStatus.ALIVE  # older than its join


def test_failed_member_then_leave_intent_becomes_left() -> None:
    h = Harness()
    h.alive("n1")
    h.dead("n1")
    assert h.status("n1") == MemberStatus.FAILED
    assert h.member_events()[-1] == (EventType.MEMBER_FAILED, "n1")
    h.serf.force_leave("n1")
    assert h.status("n1") == MemberStatus.LEFT
    assert h.member_events()[-1] == (EventType.MEMBER_LEAVE, "n1")


def test_a_stale_leave_intent_about_us_is_refuted() -> None:
    h = Harness()
    h.serf.start()
    before = len(h.serf.intents)
    h.serf.notify_msg(intent(sm.SerfLeave(50, "a")))
    assert h.status("a") == MemberStatus.ALIVE
    assert h.serf.member_clock.time > 50
    assert len(h.serf.intents) == before  # our queued join intent was replaced by a newer one
    joins = [sm.decode_serf(x) for x in h.serf.get_broadcasts(0, 10_000)]
    assert isinstance(joins[0], sm.SerfJoin) and joins[0].ltime > 50


def test_reap_removes_tombstones_and_failed_members() -> None:
    profile = replace(LAN, tombstone_timeout=60.0, reconnect_timeout=120.0, reap_interval=15.0)
    h = Harness(profile=profile)
    h.serf.start()
    h.alive("n1")
    h.alive("n2")
    h.serf.force_leave("n1")
    h.dead("n1", graceful=True)
    h.dead("n2")
    h.serf.notify_msg(intent(sm.SerfJoin(3, "ghost")))
    h.clock.advance(80)
    assert h.serf.member("n1") is None
    assert h.status("n2") == MemberStatus.FAILED
    assert (EventType.MEMBER_REAP, "n1") in h.member_events()
    h.clock.advance(60)
    assert h.serf.member("n2") is None
    h.clock.advance(profile.recent_intent_timeout)
    assert not h.serf.intent_pending("ghost")


def test_prune_erases_a_failed_member_at_once() -> None:
    h = Harness()
    h.alive("n1")
    h.dead("n1")
    h.serf.notify_msg(intent(sm.SerfLeave(30, "n1", prune=True)))
    assert h.serf.member("n1") is None
    assert h.member_events()[-1] == (EventType.MEMBER_REAP, "n1")


# -- user events -----------------------------------------------------------------------


def test_user_event_size_limits() -> None:
    h = Harness()
    with pytest.raises(UserEventTooLargeError, match="before encoding") as info:
        h.serf.user_event("e", b"x" * 512)
    assert isinstance(info.value, ValueError)
    with pytest.raises(UserEventTooLargeError, match="after encoding"):
        h.serf.user_event("e", b"x" * 500)  # 501 bytes raw, more once encoded
    h.serf.user_event("e", b"x" * 450)
    big = Harness("b", profile=replace(LAN, user_event_size_limit=20_000))
    with pytest.raises(UserEventTooLargeError, match="sane"):
        big.serf.user_event("e", b"x" * (9 * 1024))
    assert len(h.user_events()) == 1


def test_user_events_are_delivered_once_and_kept_for_the_admin_api() -> None:
    h = Harness()
    ltime = h.serf.user_event("deploy", b"v1", coalesce=True)
    assert ltime == 0 and h.serf.event_clock.time == 1
    remote = sm.SerfUserEvent(7, "restart", b"web", False).to_bytes()
    h.serf.notify_msg(remote)
    h.serf.notify_msg(remote)  # gossip duplicate
    h.serf.notify_msg(sm.SerfUserEvent(7, "restart", b"db", False).to_bytes())  # same time, new
    events = h.user_events()
    assert [(e.ltime, e.name, e.payload) for e in events] == [
        (0, "deploy", b"v1"),
        (7, "restart", b"web"),
        (7, "restart", b"db"),
    ]
    assert events[0].coalesce
    assert [e.name for e in h.serf.recent_events()] == ["deploy", "restart", "restart"]
    assert len(h.serf.event_queue) == 3  # ours + two new ones rebroadcast, not the duplicate


def test_broadcasts_go_intents_then_queries_then_events() -> None:
    h = Harness()
    h.alive("n1")
    h.serf.user_event("ev", b"")
    h.serf.start_query("q", b"", timeout=1.0)
    h.serf.notify_msg(intent(sm.SerfJoin(9, "n1")))
    raw = h.serf.get_broadcasts(2, 1400)  # raw Serf messages: the node frames them
    kinds = [x[0] for x in raw]
    assert kinds == [
        sm.SerfMessageType.JOIN,
        sm.SerfMessageType.QUERY,
        sm.SerfMessageType.USER_EVENT,
    ]
    assert h.serf.get_broadcasts(2, 5) == []  # nothing fits


def test_malformed_messages_are_counted() -> None:
    h = Harness()
    h.serf.notify_msg(b"\x03\xc1")
    h.serf.notify_msg(b"\x63")
    h.serf.notify_msg(b"")
    assert h.serf.stats["messages_dropped"] == 2


# -- queries ---------------------------------------------------------------------------


def responses_sent(h: Harness) -> list[sm.SerfQueryResponse]:
    from pysyncer.gossip.packet import decode_packet

    out = []
    for _, data in h.network.sent:
        parts, _ = decode_packet(data, keyring=None, label="", verify_incoming=True)
        for part in parts:
            if part[0] == wire.USER_MSG and part[1] == sm.SerfMessageType.QUERY_RESPONSE:
                message = sm.decode_serf(part[1:])
                assert isinstance(message, sm.SerfQueryResponse)
                out.append(message)
    return out


def remote_query(
    name: str = "who",
    filters: tuple[bytes, ...] | None = None,
    flags: int = sm.QueryFlag.ACK,
    ltime: int = 3,
    query_id: int = 77,
) -> bytes:
    return sm.SerfQuery(
        ltime, query_id, ip_bytes("10.0.0.9"), 7946, "origin", filters, flags, 0, 10**9, name, b"?"
    ).to_bytes()


def test_incoming_query_acks_responds_and_rebroadcasts() -> None:
    h = Harness(tags={"role": "web-1"})
    seen: list[tuple[str, bytes]] = []

    def respond(name: str, payload: bytes) -> bytes:
        seen.append((name, payload))
        return b"here"

    h.serf.responder = respond
    h.serf.notify_msg(remote_query())
    h.serf.notify_msg(remote_query())  # duplicate: handled once
    assert seen == [("who", b"?")]
    sent = responses_sent(h)
    assert [(r.flags, r.payload, r.from_node) for r in sent] == [
        (sm.QueryFlag.ACK, None, "a"),
        (0, b"here", "a"),
    ]
    assert {addr for addr, _ in h.network.sent} == {("10.0.0.9", 7946)}
    assert len(h.serf.query_queue) == 1
    assert any(isinstance(e, QueryEvent) and e.name == "who" for e in h.events)


@pytest.mark.parametrize(
    ("filters", "answers"),
    [
        ((encode_node_filter(["a", "b"]),), True),
        ((encode_node_filter(["b"]),), False),
        ((encode_tag_filter("role", "^web-[0-9]$"),), True),
        ((encode_tag_filter("role", "^db"),), False),
        ((encode_tag_filter("missing", ".*"),), True),  # Go: missing tag = ""
        ((encode_tag_filter("role", "("),), False),  # bad regex never matches
        ((encode_node_filter(["a"]), encode_tag_filter("role", "db")), False),
        ((b"\x07\x90",), False),
    ],
)
def test_query_filters(filters: tuple[bytes, ...], answers: bool) -> None:
    h = Harness(tags={"role": "web-1"})
    h.serf.responder = lambda name, payload: b"yes"
    h.serf.notify_msg(remote_query(filters=filters))
    assert bool(responses_sent(h)) is answers
    assert len(h.serf.query_queue) == 1  # rebroadcast either way


def test_no_broadcast_flag_and_internal_ping() -> None:
    h = Harness()
    h.serf.responder = lambda name, payload: b"never for internal queries"
    flags = sm.QueryFlag.ACK | sm.QueryFlag.NO_BROADCAST
    h.serf.notify_msg(remote_query(name="_serf_ping", flags=flags))
    sent = responses_sent(h)
    assert [r.flags for r in sent] == [sm.QueryFlag.ACK]
    assert len(h.serf.query_queue) == 0


def test_oversized_response_is_not_sent() -> None:
    h = Harness()
    h.serf.responder = lambda name, payload: b"x" * 2000
    h.serf.notify_msg(remote_query(flags=0))
    assert responses_sent(h) == []
    assert h.serf.stats["responses_too_large"] == 1


def test_query_completes_early_when_every_expected_node_answered() -> None:
    h = Harness(tags={"role": "web"})
    h.serf.responder = lambda name, payload: b"from a"
    h.alive("n1", {"role": "web"})
    h.alive("n2", {"role": "db"})
    result = h.serf.start_query("ping", b"", filter_tags={"role": "web"}, request_ack=True)
    assert result.expected == {"a", "n1"}
    assert result.acks == {"a"} and result.responses == {"a": b"from a"}
    assert result.finished_at is None
    assert result.deadline - result.started == default_query_timeout(LAN.gossip_interval, 3)

    def reply(flags: int, payload: bytes | None, query_id: int = result.id) -> None:
        h.serf.notify_msg(
            sm.SerfQueryResponse(result.ltime, query_id, "n1", flags, payload).to_bytes()
        )

    reply(0, b"wrong id", query_id=result.id ^ 1)
    reply(0, b"from n1")
    assert result.finished_at is None  # n1's ack is still missing
    reply(sm.QueryFlag.ACK, None)
    assert result.completed_early
    assert result.responses == {"a": b"from a", "n1": b"from n1"}
    assert result.finished_at == h.clock.now()


def test_query_stops_waiting_for_members_that_fail() -> None:
    h = Harness()
    h.alive("n1")
    result = h.serf.start_query("q", b"", timeout=5.0)  # no local responder: self not expected
    assert result.expected == {"n1"}
    h.clock.advance(1.0)
    h.dead("n1")
    assert result.finished and result.completed_early


def test_query_times_out_without_answers() -> None:
    h = Harness()
    h.alive("n1")
    result = h.serf.start_query("q", b"", timeout=2.0)
    h.clock.advance(1.9)
    assert result.finished_at is None
    h.clock.advance(0.2)
    assert result.finished_at == pytest.approx(2.0)
    assert not result.completed_early


def test_query_size_limit_and_relay() -> None:
    h = Harness()
    with pytest.raises(QueryTooLargeError):
        h.serf.start_query("q", b"x" * 1100)
    for i in range(1, 4):
        h.alive(f"n{i}")
    h.serf.responder = lambda name, payload: b"r"
    query = sm.SerfQuery(
        3, 5, ip_bytes("10.0.0.9"), 7946, "origin", None, 0, 2, 10**9, "q", b""
    ).to_bytes()
    h.serf.notify_msg(query)
    assert h.serf.stats["relays_sent"] == 2
    targets = {addr for addr, _ in h.network.sent}
    assert ("10.0.0.9", 7946) in targets and len(targets) == 3


def test_relayed_message_is_forwarded_to_its_destination() -> None:
    h = Harness()
    inner = sm.SerfQueryResponse(1, 2, "x", 0, b"r").to_bytes()
    relay = sm.encode_relay(sm.RelayHeader(ip_bytes("10.1.2.3"), 8000, "", "origin"), inner)
    h.serf.notify_msg(relay)
    assert [addr for addr, _ in h.network.sent] == [("10.1.2.3", 8000)]
    assert responses_sent(h)[0].payload == b"r"


async def test_query_awaits_and_leave_flow() -> None:
    h = Harness()
    h.serf.responder = lambda name, payload: b"me"
    result = await h.serf.query("solo", b"")
    assert result.completed_early and result.responses == {"a": b"me"}
    leaving = asyncio.create_task(h.serf.leave())  # alone: no broadcast to wait for
    for _ in range(100):  # LeavePropagateDelay runs on the node's (virtual) clock
        await asyncio.sleep(0)
        if leaving.done():
            break
        h.clock.advance(0.1)
    await leaving
    assert h.clock.now() == pytest.approx(LAN.leave_propagate_delay, abs=0.11)
    assert h.status("a") == MemberStatus.LEFT
    with pytest.raises(SerfError):
        h.serf.user_event("late", b"")


# -- simulated pool ------------------------------------------------------------------------


def serf_of(sim: Simulation, name: str) -> Serf:
    layer = sim.nodes[name].layer
    assert isinstance(layer, Serf)
    return layer


async def serf_pool(size: int, seed: int = 1) -> tuple[Simulation, dict[str, list[SerfEvent]]]:
    events: dict[str, list[SerfEvent]] = defaultdict(list)

    def factory(
        name: str, profile: GossipProfile, clock: Clock[Hashable], rng: random.Random
    ) -> Serf:
        serf = Serf(
            name,
            {"role": "even" if int(name[1:]) % 2 == 0 else "odd"},
            profile,
            clock,
            rng,
            responder=lambda query, payload: f"{name}:{query}".encode(),
        )
        serf.subscribe(events[name].append)
        return serf

    sim = Simulation(size, seed=seed, delegate_factory=factory)
    sim.start()
    await sim.join_all()

    def converged() -> bool:
        return all(
            len(serf_of(sim, n).members()) == size
            and all(x.status == MemberStatus.ALIVE for x in serf_of(sim, n).members())
            for n in sim.live_names()
        )

    assert await sim.run_until(converged, limit=30) is not None
    return sim, events


async def test_sim_user_events_reach_everyone_exactly_once() -> None:
    sim, events = await serf_pool(30, seed=11)
    serf_of(sim, "n3").user_event("deploy", b"v1")
    serf_of(sim, "n17").user_event("deploy", b"v2")
    serf_of(sim, "n17").user_event("restart", b"")

    def received(name: str) -> list[tuple[str, bytes]]:
        return sorted((e.name, e.payload) for e in events[name] if isinstance(e, UserEvent))

    expected = sorted([("deploy", b"v1"), ("deploy", b"v2"), ("restart", b"")])
    took = await sim.run_until(lambda: all(received(n) == expected for n in sim.nodes), limit=10)
    assert took is not None
    await sim.run(10)  # no late duplicates
    assert all(received(n) == expected for n in sim.nodes)


async def test_sim_query_with_acks_completes_early() -> None:
    sim, _ = await serf_pool(30, seed=12)
    origin = serf_of(sim, "n5")
    timeout = default_query_timeout(LAN.gossip_interval, 30)
    task = asyncio.create_task(origin.query("whoami", b"", request_ack=True))
    took = await sim.run_until(task.done, limit=timeout + 1)
    result = await task
    assert took is not None
    assert result.completed_early
    assert result.acks == set(sim.nodes)
    assert result.responses == {n: f"{n}:whoami".encode() for n in sim.nodes}
    assert result.finished_at is not None
    assert result.finished_at - result.started < timeout / 2, (result.started, result.finished_at)


async def test_sim_query_with_tag_filter() -> None:
    sim, _ = await serf_pool(30, seed=13)
    task = asyncio.create_task(serf_of(sim, "n0").query("q", b"", filter_tags={"role": "odd"}))
    assert await sim.run_until(task.done, limit=10) is not None
    result = await task
    assert set(result.responses) == {f"n{i}" for i in range(1, 30, 2)}
    assert result.completed_early


async def test_sim_leave_is_left_and_kill_is_failed() -> None:
    sim, events = await serf_pool(30, seed=14)
    leaving = asyncio.create_task(serf_of(sim, "n4").leave())
    sim.kill("n9")

    def everyone_sees(name: str, status: MemberStatus) -> bool:
        return all(
            serf_of(sim, o).member(name) is not None
            and serf_of(sim, o).member(name).status == status  # type: ignore[union-attr]
            for o in sim.live_names()
            if o not in ("n4", name)
        )

    took = await sim.run_until(
        lambda: everyone_sees("n4", MemberStatus.LEFT) and everyone_sees("n9", MemberStatus.FAILED),
        limit=60,
    )
    assert took is not None
    assert await sim.run_until(leaving.done, limit=10) is not None
    await leaving
    assert serf_of(sim, "n4").local_member().status == MemberStatus.LEFT
    kinds = [(e.type, e.member.name) for e in events["n0"] if isinstance(e, MemberEvent)]
    assert (EventType.MEMBER_LEAVE, "n4") in kinds
    assert (EventType.MEMBER_FAILED, "n9") in kinds
    assert (EventType.MEMBER_FAILED, "n4") not in kinds


async def test_sim_tag_update_propagates() -> None:
    sim, events = await serf_pool(30, seed=15)
    serf_of(sim, "n8").set_tags({"role": "leader"})

    def updated() -> bool:
        return all(
            (member := serf_of(sim, o).member("n8")) is not None
            and member.tags == {"role": "leader"}
            for o in sim.nodes
        )

    assert await sim.run_until(updated, limit=10) is not None
    assert any(
        isinstance(e, MemberEvent) and e.type == EventType.MEMBER_UPDATE and e.member.name == "n8"
        for e in events["n20"]
    )
