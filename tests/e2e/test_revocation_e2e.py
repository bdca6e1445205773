"""Revoking a client key on a running broker (router/security.py's ``reload``): the
operator removes its ``.key`` from --authorized-keys (or edits the ACL) and sends
SIGHUP to ``plinth serve``; the key's open connections are refused at their next
request and its new ones at the handshake, with no restart. A reload of a broken
file keeps the rules in force and says why. A real broker, real clients."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from plinth import Admin
from plinth.errors import HandshakeRefusedError, NotAuthorizedError
from tests.e2e.test_security_e2e import (admin_and_reader, as_client,  # noqa: F401 (a fixture)
                                         secured)
from tests.support import unique_topic, wait_until


def reload_and_wait(broker, line: str) -> None:
    """SIGHUP the broker; return once its log has one more line holding ``line``."""
    before = broker.log().count(line)
    broker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: broker.log().count(line) > before, timeout_s=30,
               explain=lambda: "".join(broker.output[-10:]))


def test_a_key_removed_then_sighup_is_refused_on_its_open_connection_and_its_next_one(secured):
    broker = secured[0]
    as_admin, as_reader = admin_and_reader(secured)
    topic = unique_topic("revoke")
    with Admin(broker=broker.url, **as_admin) as admin:
        admin.create_topic(topic, 1)
    # Given the reader connected and served
    with Admin(broker=broker.url, **as_reader) as reader:
        assert topic in reader.list_topics()
        # When its key is removed from --authorized-keys and the broker gets SIGHUP
        authorized = path_given(broker, "--authorized-keys")
        (authorized / "reader.key").unlink()
        reload_and_wait(broker, "reloaded: 1 authorized client keys")
        # Then its open connection's next request is refused, saying why
        with pytest.raises(NotAuthorizedError, match="no longer in --authorized-keys"):
            reader.list_topics()
    # And a new connection with its key is refused at the handshake
    with Admin(broker=broker.url, **as_reader) as reader:
        with pytest.raises(HandshakeRefusedError, match="refused this client's CurveZMQ key"):
            reader.list_topics()
    # While the admin, still listed, is served as before, by the same broker process
    with Admin(broker=broker.url, **as_admin) as admin:
        assert topic in admin.list_topics()
    assert broker.proc.poll() is None


def test_a_sighup_with_a_broken_acl_keeps_the_rules_in_force_and_logs_why(secured):
    broker, server_public, admin_secret, reader_secret, _ = secured
    acl = path_given(broker, "--acl")
    good = acl.read_text()
    # Given an ACL file broken mid-edit
    acl.write_text(good[:-5])
    # When the broker gets SIGHUP
    reload_and_wait(broker, "reload refused, the rules in force stay")
    # Then the log names the file, and the grants in force still decide
    assert str(acl) in broker.log().split("reload refused")[-1].splitlines()[0]
    with Admin(broker=broker.url, **as_client(admin_secret, server_public)) as admin:
        admin.create_topic(unique_topic("kept"), 1)
    with Admin(broker=broker.url, **as_client(reader_secret, server_public)) as reader:
        with pytest.raises(NotAuthorizedError, match="may not admin"):
            reader.create_topic(unique_topic("no"), 1)
    # And once the file is whole again, a SIGHUP applies it: the reader may admin
    grants = json.loads(good)
    for key in grants:
        grants[key] = [{"operations": ["produce", "consume", "admin"], "topics": "*"}]
    acl.write_text(json.dumps(grants))
    reload_and_wait(broker, "and the ACL")
    with Admin(broker=broker.url, **as_client(reader_secret, server_public)) as reader:
        reader.create_topic(unique_topic("now"), 1)


def path_given(broker, option: str) -> Path:
    """The path the broker was given after ``option``."""
    args = list(broker.extra_args)
    return Path(args[args.index(option) + 1])
