"""What a client call needs of the broker's protocol version, checked before it is sent.

A broker says its protocol version (plinth/protocol.py PROTOCOL_VERSION) on its
``topics`` replies; one before Plinth 0.2.0 says nothing (0). Cap'n Proto lets an
older broker read a newer client's request, and it reads it without the fields it
does not know: a delete's topic id guard and a create's validate_only are dropped,
and the topic is deleted or created all the same (tester U, session 38, against a
broker of 2026-12-04). A request of a kind it does not know is not answered at all.
So the calls below ask the broker's version first (once per admin client: Kafka's
clients ask ApiVersions once per connection) and raise UnsupportedVersionError,
sending nothing, if the broker is older than the call needs.

Called by the admin clients (client/admin.py, client/aio/admin.py), in the
caller's thread or on the client's event loop.
"""

from __future__ import annotations

from plinth.errors import UnsupportedVersionError

# Each guarded call: the protocol version it needs, and what an older broker does with it.
CALLS_NEEDING = {
    "create_topics(validate_only=True)": (1, "creates the topics instead of checking them"),
    "delete_topic(topic_id=...)": (1, "deletes the topic whatever its id"),
    "delete_group_offsets": (1, "does not answer it"),
}


def check_protocol(call: str, broker_version: int, url: str) -> None:
    """UnsupportedVersionError unless the broker at ``url``, of protocol
    ``broker_version``, serves ``call`` (a key of CALLS_NEEDING)."""
    needed, older_does = CALLS_NEEDING[call]
    if broker_version >= needed:
        return
    said = (f"speaks protocol {broker_version}" if broker_version
            else "says no protocol version: a Plinth before 0.2.0")
    raise UnsupportedVersionError(
        f"{call} needs a broker of protocol version {needed} or later; the broker at {url} "
        f"{said}, which {older_does}. Nothing was sent: upgrade the broker")
