"""The Kafka listener's request handling: each Kafka API answered from Plinth.

Runs on the Kafka listener's event loop thread (router/kafka/listener.py calls
``handle`` once per request, concurrently; the listener writes the answers in
request order). Each API is answered by one async function of the ``api_*``
modules beside this one, which turn the Kafka request into Plinth requests
through the backend (backend.py) and Plinth's answers into the Kafka response
body (plain dicts, router/kafka/codec.py's convention).

What a Kafka client sees of the cluster (Metadata, FindCoordinator,
DescribeCluster): one broker per router with a Kafka listener, each known by
its advertised HOST:PORT (the controller's routing table lists them:
``KafkaCluster.brokers``) and a node id derived from it, so that every router
gives every client the same ids. Any router serves any partition (it forwards
to the shard that leads it), so the partitions' "leaders" and the groups'
coordinators are only spread over the routers, by a hash, for the clients to
spread their load.

Logins. With SASL users (``sasl_users``, service.py) a connection is served
only ApiVersions, SaslHandshake and SaslAuthenticate (api_sasl.py) until it
has logged in; any other request, or any request after a failed login,
closes it (as Kafka does). Each request of a logged-in connection runs with
backend.PRINCIPAL set to its user, so that the router checks the Plinth
requests it becomes against that user's grants.

Reloads. SIGHUP reads the users file again (service.py's ``reload_users``, on
the process's main thread), which replaces ``sasl_users`` whole: the listener's
thread reads the reference without a lock (a swap is atomic), once per use.
New logins meet the new users at once. A connection logged in before keeps
the credential it logged in with (api_sasl.py), and each of its requests is
checked against the users in force: if its user was removed or its password
changed, the request closes the connection, so a revoked password cannot keep
producing on a connection opened before. The check is a dict look-up and a
compare of the stored keys, no PBKDF2, as the router's is a set look-up of
the request's key (router/security.py's ``is_admitted``).

Order. A connection's requests are handled concurrently, but a change (the
``CHANGE_APIS``: topics created, deleted, grown or altered) is made after the
connection's changes before it, and every request after a change waits for
it, as Kafka serves a connection's requests one at a time: a Metadata
pipelined after a CreateTopics finds the topic. The backend sends changes
through a lane of their own, so that no other connection waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from typing import NamedTuple

from plinth import limits
from plinth.router.kafka import (api_acls, api_cluster, api_configs, api_elections, api_fetch,
                                 api_groups, api_log_dirs, api_offsets, api_produce, api_sasl,
                                 api_topics)
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import PRINCIPAL, PlinthBackend
from plinth.router.kafka.codec import API_KEYS, RequestHeader
from plinth.router.kafka.listener import CloseConnection
from plinth.router.kafka.sasl_users import ScramCredential

log = logging.getLogger(__name__)


class KafkaBroker(NamedTuple):
    node_id: int
    host: str
    port: int


def node_id_of(address: str) -> int:
    """A router's Kafka node id: a non-negative int32 from its advertised HOST:PORT, the
    same in every router (Kafka clients key connections by node id)."""
    return zlib.crc32(address.encode()) & 0x7FFFFFFF


def _broker(address: str) -> KafkaBroker:
    host, _, port = address.rpartition(":")
    return KafkaBroker(node_id_of(address), host.strip("[]"), int(port))


class KafkaCluster:
    """The brokers a Kafka client is told of: every router's Kafka listener. Any thread."""

    def __init__(self, advertised: str, cluster_id: str,
                 brokers: Callable[[], tuple[str, ...]] = tuple):
        self.advertised = advertised
        self.cluster_id = cluster_id
        self._brokers = brokers
        self.node_id = node_id_of(advertised)

    def brokers(self) -> list[KafkaBroker]:
        """Every router's listener, this one included (before the controller has heard
        of it too), by node id."""
        known = {node_id_of(a): _broker(a) for a in (*self._brokers(), self.advertised)}
        return [known[node_id] for node_id in sorted(known)]

    def leader_of(self, brokers: list[KafkaBroker], topic: str, partition: int) -> int:
        """The node id named as the partition's leader: spread by topic and partition."""
        return brokers[(zlib.crc32(topic.encode()) + partition) % len(brokers)].node_id

    def coordinator_of(self, brokers: list[KafkaBroker], key: str) -> KafkaBroker:
        """The broker named as a group's coordinator: spread by the group's name."""
        return brokers[zlib.crc32(key.encode()) % len(brokers)]


class KafkaGateway:
    """The handler the listener calls. Construct anywhere; ``handle`` on the listener's
    event loop thread only."""

    def __init__(self, backend: PlinthBackend, cluster: KafkaCluster,
                 sasl_users: dict[str, ScramCredential] | None = None,
                 auto_create_topics: bool = False, log_dir: str = "", acl=None):
        """``sasl_users``: None, or the users who may log in (then nothing else is
        served before a login). ``auto_create_topics``: Kafka's
        auto.create.topics.enable (Metadata creates a topic a client asks for, if the
        client allows it too). ``log_dir``: the broker's data dir, the one log
        directory DescribeLogDirs names ("": not known to this router). ``acl``: the
        router's ACL file (router/acl.py's Acl; None: none), which DescribeAcls
        describes."""
        self.backend = backend
        self.cluster = cluster
        # None: no login asked. Replaced whole by a reload (main thread, service.py);
        # the listener's thread reads it once per use, so a login or a check sees
        # one file, never half of two.
        self.sasl_users = sasl_users
        self.tls = False               # the listener's connections are TLS (service.py)
        # SASL PLAIN may be offered: TLS, or a loopback address (service.py, api_sasl.py)
        self.sasl_plain_allowed = False
        self.sasl_log = api_sasl.refusals_log()   # refused and failed logins, limited
        # how long a failed login's answer waits (api_sasl.py)
        self.failed_login_delay_s = limits.KAFKA_FAILED_AUTHENTICATION_DELAY_MS / 1000
        self.auto_create_topics = auto_create_topics
        self.auto_create_refusals = api_cluster.AutoCreateRefusals()
        self.log_dir = log_dir
        self.acl = acl
        self._handlers = {
            API_KEYS["ApiVersions"]: api_cluster.api_versions,
            API_KEYS["Metadata"]: api_cluster.metadata,
            API_KEYS["DescribeTopicPartitions"]: api_cluster.describe_topic_partitions,
            API_KEYS["DescribeCluster"]: api_cluster.describe_cluster,
            API_KEYS["FindCoordinator"]: api_cluster.find_coordinator,
            API_KEYS["InitProducerId"]: api_produce.init_producer_id,
            API_KEYS["Produce"]: api_produce.produce,
            API_KEYS["Fetch"]: api_fetch.fetch,
            API_KEYS["ListOffsets"]: api_offsets.list_offsets,
            API_KEYS["DeleteRecords"]: api_offsets.delete_records,
            API_KEYS["CreateTopics"]: api_topics.create_topics,
            API_KEYS["DeleteTopics"]: api_topics.delete_topics,
            API_KEYS["CreatePartitions"]: api_topics.create_partitions,
            API_KEYS["ElectLeaders"]: api_elections.elect_leaders,
            API_KEYS["DescribeConfigs"]: api_configs.describe_configs,
            API_KEYS["AlterConfigs"]: api_configs.alter_configs,
            API_KEYS["IncrementalAlterConfigs"]: api_configs.incremental_alter_configs,
            API_KEYS["ListConfigResources"]: api_configs.list_config_resources,
            API_KEYS["JoinGroup"]: api_groups.join_group,
            API_KEYS["SyncGroup"]: api_groups.sync_group,
            API_KEYS["Heartbeat"]: api_groups.heartbeat,
            API_KEYS["LeaveGroup"]: api_groups.leave_group,
            API_KEYS["OffsetCommit"]: api_groups.offset_commit,
            API_KEYS["OffsetFetch"]: api_groups.offset_fetch,
            API_KEYS["DescribeGroups"]: api_groups.describe_groups,
            API_KEYS["DeleteGroups"]: api_groups.delete_groups,
            API_KEYS["OffsetDelete"]: api_groups.offset_delete,
            API_KEYS["ListGroups"]: api_groups.list_groups,
            API_KEYS["DescribeLogDirs"]: api_log_dirs.describe_log_dirs,
            API_KEYS["DescribeAcls"]: api_acls.describe_acls,
            API_KEYS["CreateAcls"]: api_acls.create_acls,
            API_KEYS["DeleteAcls"]: api_acls.delete_acls,
        }
        if sasl_users is not None:
            self._handlers[API_KEYS["SaslHandshake"]] = api_sasl.sasl_handshake
            self._handlers[API_KEYS["SaslAuthenticate"]] = api_sasl.sasl_authenticate
        else:   # listed, and refused as Kafka refuses them on a listener without SASL
            self._handlers[API_KEYS["SaslHandshake"]] = api_sasl.without_sasl
            self._handlers[API_KEYS["SaslAuthenticate"]] = api_sasl.without_sasl

    def api_keys(self) -> list[int]:
        """The API keys this listener answers (what ApiVersions advertises)."""
        return list(self._handlers)

    async def handle(self, connection, header: RequestHeader, body: dict) -> dict | None:
        """The response body for one request (None: no response, a produce with acks 0).

        An API the listener decodes but Plinth does not answer yet gets a body whose
        top-level error says UNSUPPORTED_VERSION where the response has an error code,
        so the client fails clearly instead of waiting.
        """
        if self.sasl_users is not None:
            self._check_login(connection, header)
        handler = self._handlers.get(header.api_key)
        if handler is None:
            log.info("Kafka API %d v%d from %s is not supported", header.api_key,
                     header.api_version, header.client_id)
            return {"error_code": kafka.UNSUPPORTED_VERSION}
        await self._after_earlier_change(connection, header)
        return await handler(self, header, body, connection)

    @staticmethod
    async def _after_earlier_change(connection, header: RequestHeader) -> None:
        """Wait for the connection's latest change before this request, if it is still
        being made (whatever its outcome); a change becomes the latest itself."""
        state = connection.state
        earlier = state.get("change")
        if header.api_key in CHANGE_APIS:
            state["change"] = asyncio.current_task()
        if earlier is not None and not earlier.done():
            await asyncio.wait({earlier})

    def _check_login(self, connection, header: RequestHeader) -> None:
        """Raise CloseConnection for a request the connection may not make yet, or no
        longer (its user removed or its password changed by a reload); set the
        principal the rest of this request's task acts for."""
        state = connection.state
        if state.get("sasl_failed"):
            raise CloseConnection(f"api {header.api_key} after a failed SASL login")
        principal = state.get("principal")
        if principal is None:
            if header.api_key not in _BEFORE_LOGIN:
                raise CloseConnection(f"api {header.api_key} v{header.api_version} before a "
                                      f"SASL login (only ApiVersions, SaslHandshake and "
                                      f"SaslAuthenticate are served until then)")
        elif self.sasl_users.get(principal) != state["sasl_credential"]:
            # Kafka would wait for the session's end (KIP-368); a leaked password is
            # cut off now: the client's next login meets the file in force.
            raise CloseConnection(f"user {principal!r} was removed from the SASL users file "
                                  f"or its password changed (reloaded): it must log in again")
        PRINCIPAL.set(principal)   # this request's task only: each has its own context


# The APIs whose requests change topics: made in order, each before the connection's
# later requests (see the module).
CHANGE_APIS = frozenset(API_KEYS[name] for name in (
    "CreateTopics", "DeleteTopics", "CreatePartitions", "AlterConfigs",
    "IncrementalAlterConfigs"))
_BEFORE_LOGIN = frozenset({API_KEYS["ApiVersions"], API_KEYS["SaslHandshake"],
                           API_KEYS["SaslAuthenticate"]})
