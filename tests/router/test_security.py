"""security.py and the router's ACL and quota hooks: a real Router with CurveZMQ and an
ACL file, between real clients (CurveZMQ DEALERs) and fake shards and controller that
speak the real protocol (tests/router/fakes.py)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zmq
import zmq.auth
from zmq.utils.monitor import recv_monitor_message

from plinth import limits, protocol
from plinth.control import placement
from plinth.errors import InvalidConfigError, NotAuthorizedError, TooManyRequestsError, UnavailableError
from plinth.router.router import Router
from plinth.router.security import OffsetsFilter, Security
from tests.router.fakes import Client, FakeController, FakeShard, answer
from tests.support import curve_key_pair, free_port

RATE = 100_000                  # bytes/s of the quotas below
OVER = 3 * RATE                 # one payload of this many bytes puts a key 2 s over its quota


class CurveClient(Client):
    """A client's DEALER with its CurveZMQ key pair, as the client library makes it."""

    def __init__(self, url: str, secret_file: Path, server_public: bytes):
        public, secret = zmq.auth.load_certificate(str(secret_file))
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.curve_publickey, self.socket.curve_secretkey = public, secret
        self.socket.curve_serverkey = server_public
        self.socket.connect(url)


@dataclass
class SecureRig:
    router: Router
    url: str
    context: zmq.Context
    controller: FakeController
    shards: dict[str, FakeShard]
    secrets: dict[str, Path]
    server_public: bytes
    clients: list[Client] = field(default_factory=list)

    def client(self, name: str) -> Client:
        self.clients.append(CurveClient(self.url, self.secrets[name], self.server_public))
        return self.clients[-1]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.router.stop()
        for shard in self.shards.values():
            shard.close()
        self.context.destroy(linger=0)


@pytest.fixture
def secure_rig(tmp_path):
    """``secure_rig(acl, handler=None, **controller_kwargs)``: clients "alice" and "bob"
    with authorized keys; ``acl`` names them by name (a JSON object with those names
    where the keys go); two fake shards answering with ``handler``."""
    rigs: list[SecureRig] = []

    def make(acl: dict, handler=None, **controller_kwargs) -> SecureRig:
        keys, authorized = tmp_path / "keys", tmp_path / "authorized"
        authorized.mkdir(exist_ok=True)
        keys.mkdir(exist_ok=True)
        server_public_file, server_secret = curve_key_pair(keys, "server")
        secrets, text = {}, json.dumps(acl)
        for name in ("alice", "bob"):
            public_file, secrets[name] = curve_key_pair(keys, name)
            (authorized / f"{name}.key").write_text(Path(public_file).read_text())
            public = zmq.auth.load_certificate(public_file)[0].decode()
            text = text.replace(f'"{name}"', json.dumps(public))
        (tmp_path / "acl.json").write_text(text)
        shards = {shard_id: FakeShard(shard_id, handler=handler and (lambda r, s=shard_id: handler(r, s)))
                  for shard_id in ("shard-0", "shard-1")}
        controller = FakeController({i: s.address for i, s in shards.items()}, **controller_kwargs)
        url, context = f"tcp://127.0.0.1:{free_port()}", zmq.Context()
        security = Security(Path(server_secret), authorized, tmp_path / "acl.json")
        router = Router(url, controller, context=context, security=security)
        router.start(controller.routing())
        rigs.append(SecureRig(router, url, context, controller, shards,
                              {name: Path(path) for name, path in secrets.items()},
                              zmq.auth.load_certificate(server_public_file)[0]))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def group_shard(rig: SecureRig, group: str) -> FakeShard:
    return rig.shards[placement.shard_for_group(group, list(rig.controller.shard_ids))]


# --- ACL ---------------------------------------------------------------------------------

def test_a_request_the_acl_refuses_is_answered_not_authorized_and_never_reaches_a_shard(secure_rig):
    # Given alice with every operation on topics a.* and bob owning group payments
    rig = secure_rig({"alice": [{"operations": ["produce", "consume", "admin"], "topics": "a.*"}],
                      "bob": [{"operations": ["consume"], "topics": "b.*", "groups": "payments"}]},
                     topics={"a.t": 1})
    alice = rig.client("alice")
    # When alice heartbeats as a member of payments, reads its offsets and adds shards
    refused = [alice.request(protocol.encode_group_heartbeat(1, "payments", "bobs-id", -1, [], set(),
                                                             0, "")),
               alice.request(protocol.encode_group_request(2, "fetchOffsets", "payments")),
               alice.request(protocol.encode_shards_change(3, "addShards", 1))]
    # Then each is refused, and no shard saw any of them
    assert [type(view.error) for view in refused] == [NotAuthorizedError] * 3
    assert [view.request_id for view in refused] == [1, 2, 3]
    assert all(shard.requests() == [] for shard in rig.shards.values())
    # While her own topic works
    assert alice.request(protocol.encode_produce(4, "a.t", 0, 1), b"batch").error is None


def test_list_groups_answers_only_the_groups_the_client_may_describe(secure_rig):
    # Given groups of two teams, alice admin of team-a's and bob with a cluster grant only
    rig = secure_rig({"alice": [{"operations": ["admin"], "groups": "team-a.*"}],
                      "bob": [{"operations": ["cluster"]}]})
    rig.controller.groups = ["team-a.billing", "team-b.payments", "team-a.audit"]
    # When each lists the groups
    seen = {name: rig.client(name).request(protocol.encode_list_groups(1)).groups
            for name in ("alice", "bob")}
    # Then alice sees team-a's groups only, and bob none
    assert seen == {"alice": ["team-a.billing", "team-a.audit"], "bob": []}


def test_list_groups_keeps_each_visible_groups_state_beside_its_name(secure_rig):
    # Given team-a's groups around a team-b group, each in a state of its own
    rig = secure_rig({"alice": [{"operations": ["admin"], "groups": "team-a.*"}]})
    rig.controller.groups = ["team-a.audit", "team-b.payments", "team-a.billing"]
    rig.controller.group_states = {"team-a.audit": "Empty", "team-b.payments": "Stable",
                                   "team-a.billing": "PreparingRebalance"}
    # When alice lists the groups
    listed = rig.client("alice").request(protocol.encode_list_groups(1)).group_listings
    # Then the team-b group's state went with its name: each state is its own group's
    assert listed == [protocol.GroupListing("team-a.audit", "Empty"),
                      protocol.GroupListing("team-a.billing", "PreparingRebalance")]


def test_pages_of_names_hold_only_what_the_client_may_see_and_more_stays_exact(secure_rig):
    # Given 30 groups and topics of team-a among 300 of team-b, alice admin and consumer
    # of team-a's
    rig = secure_rig({"alice": [{"operations": ["admin"], "groups": "team-a.*"},
                                {"operations": ["consume"], "topics": "team-a.*"}]},
                     topics={f"team-{'a' if i % 10 == 0 else 'b'}.{i:03d}": 1 for i in range(300)})
    rig.controller.groups = [f"team-{'a' if i % 10 == 0 else 'b'}.{i:03d}" for i in range(300)]
    alice = rig.client("alice")
    for kind in ("listTopicsPage", "listGroupsPage"):
        # When she walks the pages, 7 names at a time
        names, after, more = [], "", True
        while more:
            page = alice.request(protocol.encode_names_page_request(1, kind, "", after, 7)).names_page
            assert len(page.names) <= 7 and (not page.more or len(page.names) == 7)
            names += page.names
            after, more = (page.names[-1] if page.names else after), page.more
        # Then she sees team-a's names, each once, in order, and the last page says no more
        assert names == [f"team-a.{i:03d}" for i in range(0, 300, 10)]


def test_a_page_of_groups_under_an_acl_still_names_the_shards_that_did_not_answer(secure_rig):
    # Given team-a's groups among others, and a shard the controller's page lacks
    rig = secure_rig({"alice": [{"operations": ["admin"], "groups": "team-a.*"}]})
    rig.controller.groups = ["team-a.audit", "team-b.payments", "team-a.billing"]
    rig.controller.groups_unanswered = ["shard-1"]
    # When alice asks for a page of the groups
    page = rig.client("alice").request(protocol.encode_names_page_request(
        1, "listGroupsPage", "", "", 10)).names_page
    # Then it holds her groups, and says which shard's groups it lacks
    assert (page.names, page.more, page.unanswered) == (
        ["team-a.audit", "team-a.billing"], False, ["shard-1"])


def test_topic_listings_answer_only_the_topics_the_client_has_a_grant_on(secure_rig):
    # Given topics of two teams, alice consuming team-a's and bob with a cluster grant only
    rig = secure_rig({"alice": [{"operations": ["consume"], "topics": "team-a.*"}],
                      "bob": [{"operations": ["cluster"]}]},
                     topics={"team-a.orders": 1, "team-b.payments": 2, "team-a.audit": 1})
    # When each lists the topics, and asks for the metadata of every topic
    listed = {name: [info.name for info in rig.client(name).request(protocol.encode_list_topics(1)).topics]
              for name in ("alice", "bob")}
    metadata = {name: [info.name for info in rig.client(name).request(protocol.encode_metadata(2, [])).topics]
                for name in ("alice", "bob")}
    # Then alice sees team-a's topics only, and bob none
    assert listed == metadata == {"alice": ["team-a.audit", "team-a.orders"], "bob": []}


def committed_of_two_tenants(request, shard_id):
    if type(request) is protocol.FetchOffsetsRequest:
        return [protocol.encode_committed_reply(
            request.request_id, {("a.orders", 0): 5, ("a.orders", 1): 6, ("b.secret", 0): 7},
            {("a.orders", 0): "a's state", ("b.secret", 0): "b's state"})]
    return answer(request, shard_id)


def test_fetch_offsets_answers_only_partitions_of_topics_the_client_may_consume(secure_rig):
    # Given a group with offsets committed on a.orders and b.secret, alice may consume
    # a.* in it and bob every topic
    rig = secure_rig({"alice": [{"operations": ["consume"], "topics": "a.*", "groups": "shared"}],
                      "bob": [{"operations": ["consume"], "topics": "*", "groups": "shared"}]},
                     handler=committed_of_two_tenants)
    # When each reads the group's committed offsets
    seen = {name: rig.client(name).request(protocol.encode_group_request(7, "fetchOffsets", "shared"))
            for name in ("alice", "bob")}
    # Then alice gets a.orders' only, bob all of them, each under its own request id
    assert seen["alice"].committed == {("a.orders", 0): 5, ("a.orders", 1): 6}
    assert seen["bob"].committed == {("a.orders", 0): 5, ("a.orders", 1): 6, ("b.secret", 0): 7}
    assert seen["alice"].request_id == seen["bob"].request_id == 7
    # And the offsets kept keep the metadata committed with them (alice's cut answer too)
    assert seen["alice"].committed_metadata == {("a.orders", 0): "a's state"}
    assert seen["bob"].committed_metadata == {("a.orders", 0): "a's state",
                                              ("b.secret", 0): "b's state"}


def test_a_fetch_offsets_answer_the_filter_no_longer_expects_is_unavailable_never_uncut():
    # Given a filter that expects nothing (its entry dropped, or a reply never asked for)
    offsets_filter = OffsetsFilter()
    frames = [zmq.Frame(b"client"),
              zmq.Frame(protocol.encode_committed_reply(9, {("b.secret", 0): 7}))]
    # When a fetchOffsets answer passes
    offsets_filter.cut(frames)
    # Then it became an unavailable error for the same request
    view = protocol.decode_reply(frames[1].buffer)
    assert (view.request_id, type(view.error), view.committed) == (9, UnavailableError, {})


def test_the_offsets_filter_is_bounded_and_drops_only_entries_past_their_time(monkeypatch):
    # Given a filter for at most 2 pending answers, and a clock
    monkeypatch.setattr(limits, "ACL_OFFSETS_FILTERS_PENDING_MAX", 2)
    now_s = [0.0]
    offsets_filter = OffsetsFilter(clock_s=lambda: now_s[0])
    grants = object()
    offsets_filter.expect(b"c", 1, grants)
    offsets_filter.expect(b"c", 2, grants)
    # When a third comes while the first two may still be answered: refused
    with pytest.raises(TooManyRequestsError, match="awaits 2 fetchOffsets answers"):
        offsets_filter.expect(b"c", 3, grants)
    # Then once they are past their time, it is taken
    now_s[0] = limits.ACL_OFFSETS_FILTER_TTL_S + 1
    offsets_filter.expect(b"c", 3, grants)


# --- Quotas --------------------------------------------------------------------------------

QUOTA_ACL = {"alice": [{"operations": ["produce", "consume"], "topics": "*"}],
             "bob": [{"operations": ["produce", "consume"], "topics": "*"}],
             "quotas": {"alice": {"producer_byte_rate": RATE, "consumer_byte_rate": RATE}}}


def big_first_fetch(request, shard_id):
    """Fetch 1 returns OVER bytes of data, every other fetch 10 bytes."""
    if type(request) is protocol.FetchRequest:
        data = bytes(OVER if request.request_id == 1 else 10)
        return [protocol.encode_fetch_reply(request.request_id, 0, 0), data]
    return answer(request, shard_id)


def fetch(request_id: int) -> bytes:
    return protocol.encode_fetch(request_id, "t", 0, 0, 1024, 0)


def test_a_producer_over_its_quota_gets_its_reply_late_and_told_by_how_much(secure_rig):
    # Given alice with a produce quota, bob without
    rig = secure_rig(QUOTA_ACL, topics={"t": 1}, owners={"t": ("shard-0",)})
    alice, bob = rig.client("alice"), rig.client("bob")
    # When alice produces 3 s worth of her quota at once
    started_s = time.monotonic()
    alice.send(protocol.encode_produce(1, "t", 0, 1), bytes(OVER))
    # Then the shard gets it at once, while her reply waits
    rig.shards["shard-0"].wait_for_requests(1)
    assert not alice.has_reply(0.5)
    # And the reply comes about 2 s (her excess over the 1 s burst) later, saying so
    view, _ = alice.recv()
    waited_s = time.monotonic() - started_s
    assert (view.kind, view.error) == ("produce", None)
    assert 1_500 <= view.throttle_time_ms <= 2_000, view.throttle_time_ms
    assert waited_s >= view.throttle_time_ms / 1000 - 0.1
    # While bob, producing as much, is not throttled
    view = bob.request(protocol.encode_produce(2, "t", 0, 1), bytes(OVER))
    assert (view.kind, view.error, view.throttle_time_ms) == ("produce", None, 0)


def test_a_consumer_over_its_quota_is_told_and_its_next_fetch_waits_while_others_pass(secure_rig):
    # Given alice with a fetch quota, bob without, and a first fetch returning 3 s of her quota
    rig = secure_rig(QUOTA_ACL, handler=big_first_fetch, topics={"t": 1}, owners={"t": ("shard-0",)})
    alice, bob = rig.client("alice"), rig.client("bob")
    alice.send(fetch(1))
    first, data = alice.recv()
    # Then that reply says how long her next fetch will wait
    assert len(data) == OVER and 1_500 <= first.throttle_time_ms <= 2_000, first.throttle_time_ms
    # When she fetches again, and bob fetches after her
    alice.send(fetch(2))
    held_since_s = time.monotonic()
    assert bob.request(fetch(3)).throttle_time_ms == 0
    # Then bob's fetch reached the shard and was answered while hers was held
    assert [r.request_id for r in rig.shards["shard-0"].requests()] == [1, 3]
    # And hers reached the shard when her throttle time was over, and was answered
    rig.shards["shard-0"].wait_for_requests(3)
    assert time.monotonic() - held_since_s >= first.throttle_time_ms / 1000 - 0.2
    view, _ = alice.recv()
    assert (view.request_id, view.error) == (2, None)


def test_an_acks_0_produce_over_the_quota_is_held_then_forwarded_not_dropped(secure_rig):
    # Given alice over her produce quota after one acks=0 produce of 3 s worth
    rig = secure_rig(QUOTA_ACL, topics={"t": 1}, owners={"t": ("shard-0",)})
    alice = rig.client("alice")
    alice.send(protocol.encode_produce(1, "t", 0, 0), bytes(OVER))
    rig.shards["shard-0"].wait_for_requests(1)
    # When she sends another acks=0 produce, and an acks=1 one after it
    alice.send(protocol.encode_produce(2, "t", 0, 0), b"x")
    sent_s = time.monotonic()
    alice.send(protocol.encode_produce(3, "t", 0, 1), b"y")
    # Then the shard gets both, in order, once her throttle time is over
    assert [r.request_id for r in rig.shards["shard-0"].wait_for_requests(3)] == [1, 2, 3]
    assert time.monotonic() - sent_s >= 1.5
    # And she hears of the acks=1 one alone: the shard answered all three, in order (the
    # router sends acks=0 produces as acks=1), and the router kept the acks=0 successes
    assert [r.acks for r in rig.shards["shard-0"].requests()] == [1, 1, 1]
    assert alice.recv()[0].request_id == 3


def test_a_client_over_its_quota_may_have_a_bounded_number_of_requests_held(secure_rig):
    # Given alice over her fetch quota
    rig = secure_rig(QUOTA_ACL, handler=big_first_fetch, topics={"t": 1}, owners={"t": ("shard-0",)})
    alice = rig.client("alice")
    alice.send(fetch(1))
    assert alice.recv()[0].throttle_time_ms > 0
    # When she sends one fetch more than the router holds for a client
    held_max = limits.QUOTA_REQUESTS_HELD_PER_CLIENT_MAX
    for request_id in range(2, held_max + 3):
        alice.send(fetch(request_id))
    # Then the last is refused at once, and every held one is answered later
    refused = alice.recv()[0]
    assert (refused.request_id, type(refused.error)) == (held_max + 2, TooManyRequestsError)
    answered = sorted(alice.recv()[0].request_id for _ in range(held_max))
    assert answered == list(range(2, held_max + 2))


def _refused_handshakes(url: str, server_public: bytes, times: int) -> None:
    """Connect to the router ``times`` times, a new socket each time, with one fresh key
    its ZAP refuses, waiting until each handshake was refused."""
    context = zmq.Context.instance()
    public, secret = zmq.curve_keypair()
    for _ in range(times):
        sock = context.socket(zmq.DEALER)
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = server_public
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        try:
            sock.connect(url)
            assert monitor.poll(10_000), "the router never refused the handshake"
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)


def test_refused_handshakes_are_logged_once_per_key_per_interval(secure_rig, caplog):
    # Given a router whose ZAP lets in alice and bob only
    rig = secure_rig({"alice": [{"operations": ["cluster"]}]})
    with caplog.at_level(logging.WARNING, logger="plinth.router.security"):
        # When one unlisted key tries 20 times, and another key once
        _refused_handshakes(rig.url, rig.server_public, 20)
        _refused_handshakes(rig.url, rig.server_public, 1)
    # Then each key wrote one line, not one per try (a client reconnecting in a loop
    # would otherwise fill the log)
    refusals = [r.getMessage() for r in caplog.records if "refused a client" in r.getMessage()]
    assert len(refusals) == 2, refusals
    assert refusals[0] != refusals[1]


def test_refused_handshakes_with_a_fresh_key_each_write_a_bounded_number_of_lines(
        secure_rig, caplog):
    # Given a router whose ZAP lets in alice and bob only
    rig = secure_rig({"alice": [{"operations": ["cluster"]}]})
    tries = limits.UNAUTHENTICATED_LOG_LINES_MAX + 20
    with caplog.at_level(logging.WARNING, logger="plinth.router.security"):
        # When a client makes a new key for every try (keys cost nothing)
        for _ in range(tries):
            _refused_handshakes(rig.url, rig.server_public, 1)
    # Then the log holds the bound's lines, not one per try, the last saying why
    refusals = [r.getMessage() for r in caplog.records if "refused a client" in r.getMessage()]
    assert len(refusals) == limits.UNAUTHENTICATED_LOG_LINES_MAX, len(refusals)
    assert "the next are dropped and counted" in refusals[-1]


# --- Revocation: reloading the allow-list and the ACL (SIGHUP) -------------------------

def _handshake_succeeds(url: str, server_public: bytes, secret_file: Path) -> bool:
    """Whether a new connection with the key pair in ``secret_file`` passes the ZAP check,
    as libzmq tells the client's socket (its monitor)."""
    public, secret = zmq.auth.load_certificate(str(secret_file))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        sock.connect(url)
        assert monitor.poll(10_000), "the handshake neither passed nor was refused"
        return recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


def test_a_key_removed_and_reloaded_is_refused_at_its_next_request_and_its_next_handshake(
        tmp_path, secure_rig):
    # Given bob connected and served
    rig = secure_rig({"bob": [{"operations": ["produce"], "topics": "b.*"}]}, topics={"b.t": 1})
    bob = rig.client("bob")
    assert bob.request(protocol.encode_produce(1, "b.t", 0, 1), b"batch").error is None
    # When his key is removed from the authorized keys and the router reloads them
    (tmp_path / "authorized" / "bob.key").unlink()
    assert rig.router.security.reload() is None
    # Then his open connection's next request is refused, naming the directory
    refused = bob.request(protocol.encode_produce(2, "b.t", 0, 1), b"batch")
    assert type(refused.error) is NotAuthorizedError
    assert "no longer in --authorized-keys" in str(refused.error)
    assert str(tmp_path / "authorized") in str(refused.error)
    assert len(rig.shards["shard-0"].requests()) == 1   # it never reached the shard
    # And a new connection with his key fails its handshake, while alice's passes
    assert not _handshake_succeeds(rig.url, rig.server_public, rig.secrets["bob"])
    assert _handshake_succeeds(rig.url, rig.server_public, rig.secrets["alice"])


def test_a_reloaded_acl_decides_the_next_request_of_a_connection_already_open(tmp_path, secure_rig):
    # Given alice, who may produce to a.*
    rig = secure_rig({"alice": [{"operations": ["produce"], "topics": "a.*"}]}, topics={"a.t": 1})
    alice = rig.client("alice")
    assert alice.request(protocol.encode_produce(1, "a.t", 0, 1), b"batch").error is None
    # When the ACL file drops her grant and the router reloads it
    acl = tmp_path / "acl.json"
    acl.write_text(acl.read_text().replace('"produce"', '"consume"'))
    assert rig.router.security.reload() is None
    # Then her next produce is refused
    assert type(alice.request(protocol.encode_produce(2, "a.t", 0, 1), b"batch").error) is \
        NotAuthorizedError


def test_a_reload_of_a_bad_file_keeps_every_rule_in_force_and_says_why(tmp_path, secure_rig, caplog):
    # Given bob served, under an ACL that lets him produce
    rig = secure_rig({"bob": [{"operations": ["produce"], "topics": "b.*"}]}, topics={"b.t": 1})
    bob = rig.client("bob")
    # When his key is removed but the ACL file is broken at the same time
    (tmp_path / "authorized" / "bob.key").unlink()
    (tmp_path / "acl.json").write_text("{ not json")
    with caplog.at_level(logging.ERROR, logger="plinth.router.security"):
        why = rig.router.security.reload()
    # Then the reload is refused, saying which file and that the old rules stay
    assert why is not None and str(tmp_path / "acl.json") in why
    assert any("reload refused, the rules in force stay" in r.getMessage() and
               str(tmp_path / "acl.json") in r.getMessage() for r in caplog.records)
    # And nothing changed: bob is still served (no half-applied allow-list)
    assert bob.request(protocol.encode_produce(1, "b.t", 0, 1), b"batch").error is None


def test_a_malformed_key_file_among_the_authorized_keys_is_refused_naming_it(tmp_path):
    # Given an authorized-keys directory holding one file that is no public key
    keys, authorized = tmp_path / "keys", tmp_path / "authorized"
    keys.mkdir(), authorized.mkdir()
    _, server_secret = curve_key_pair(keys, "server")
    (authorized / "junk.key").write_text("not a certificate\n")
    # When the router's Security loads it, Then one InvalidConfigError names the
    # option, the directory and the file
    with pytest.raises(InvalidConfigError, match=re.escape(
            f"--authorized-keys {authorized}: {authorized / 'junk.key'} holds no CurveZMQ "
            f"public key")):
        Security(Path(server_secret), authorized)


def test_the_routers_refusals_are_counted_by_code_for_the_metrics(tmp_path, secure_rig):
    # Given alice, who may produce to a.* only, and bob, who may produce to b.*
    rig = secure_rig({"alice": [{"operations": ["produce"], "topics": "a.*"}],
                      "bob": [{"operations": ["produce"], "topics": "b.*"}]})
    alice, bob = rig.client("alice"), rig.client("bob")
    # When bob and then alice (twice) are refused by the ACL, a stranger's handshake
    # 3 times, and bob once more after his key was removed and reloaded
    assert type(bob.request(protocol.encode_produce(1, "a.t", 0, 1), b"x").error) is \
        NotAuthorizedError
    for request_id in (1, 2):
        alice.request(protocol.encode_produce(request_id, "b.t", 0, 1), b"x")
    _refused_handshakes(rig.url, rig.server_public, 3)
    (tmp_path / "authorized" / "bob.key").unlink()
    assert rig.router.security.reload() is None
    bob.request(protocol.encode_produce(2, "b.t", 0, 1), b"x")
    # Then the router's counts say so, by code
    assert rig.router.security.refusals() == {"notAuthorized": 4, "handshakeRefused": 3}


def test_a_server_secret_key_others_may_read_is_refused_naming_its_mode_and_the_chmod(tmp_path):
    # Given the server's secret key, written as zmq.auth does (the umask's mode, 0644 here)
    os.umask(0o022)
    _, secret = zmq.auth.create_certificates(str(tmp_path), "server")
    (tmp_path / "authorized").mkdir()
    # When the router's Security loads it, Then it is refused, saying how to fix it
    with pytest.raises(InvalidConfigError, match=re.escape(
            f"the CurveZMQ server secret key {secret} has mode 644: other users may read or "
            f"change it. Run `chmod 600 {secret}`")):
        Security(Path(secret), tmp_path / "authorized")
    # And once only its owner may read it, it is used
    Path(secret).chmod(0o600)
    Security(Path(secret), tmp_path / "authorized")
