"""The Kafka listener's request handling: each Kafka API answered from Plinth.

Runs on the Kafka listener's event loop thread (router/kafka/listener.py calls
``handle`` once per request, concurrently; the listener writes the answers in
request order). Each API is answered by one async function of the ``api_*``
modules beside this one, which turn the Kafka request into Plinth requests
through the backend (backend.py) and Plinth's answers into the Kafka response
body (plain dicts, router/kafka/codec.py's convention).

What a Kafka client sees of the cluster (Metadata, FindCoordinator,
DescribeCluster): one broker per Kafka listener, this one, with node id
``KafkaCluster.node_id``, which leads every partition: it forwards each
request to the shard that really leads the partition.

Logins. With SASL users (``sasl_users``, service.py) a connection is served
only ApiVersions, SaslHandshake and SaslAuthenticate (api_sasl.py) until it
has logged in; any other request, or any request after a failed login,
closes it (as Kafka does). Each request of a logged-in connection runs with
backend.PRINCIPAL set to its user, so that the router checks the Plinth
requests it becomes against that user's grants.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from plinth.router.kafka import (api_cluster, api_fetch, api_groups, api_offsets, api_produce,
                                 api_sasl, api_topics)
from plinth.router.kafka import error_codes as kafka
from plinth.router.kafka.backend import PRINCIPAL, PlinthBackend
from plinth.router.kafka.codec import API_KEYS, RequestHeader
from plinth.router.kafka.listener import CloseConnection
from plinth.router.kafka.sasl_users import ScramCredential

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaCluster:
    """What the listener tells clients about the cluster: itself, as one broker."""

    node_id: int
    advertised_host: str
    advertised_port: int
    cluster_id: str


class KafkaGateway:
    """The handler the listener calls. Construct anywhere; ``handle`` on the listener's
    event loop thread only."""

    def __init__(self, backend: PlinthBackend, cluster: KafkaCluster,
                 sasl_users: dict[str, ScramCredential] | None = None):
        self.backend = backend
        self.cluster = cluster
        self.sasl_users = sasl_users   # None: no login asked
        self._handlers = {
            API_KEYS["ApiVersions"]: api_cluster.api_versions,
            API_KEYS["Metadata"]: api_cluster.metadata,
            API_KEYS["DescribeCluster"]: api_cluster.describe_cluster,
            API_KEYS["FindCoordinator"]: api_cluster.find_coordinator,
            API_KEYS["InitProducerId"]: api_produce.init_producer_id,
            API_KEYS["Produce"]: api_produce.produce,
            API_KEYS["Fetch"]: api_fetch.fetch,
            API_KEYS["ListOffsets"]: api_offsets.list_offsets,
            API_KEYS["CreateTopics"]: api_topics.create_topics,
            API_KEYS["DeleteTopics"]: api_topics.delete_topics,
            API_KEYS["CreatePartitions"]: api_topics.create_partitions,
            API_KEYS["DescribeConfigs"]: api_topics.describe_configs,
            API_KEYS["JoinGroup"]: api_groups.join_group,
            API_KEYS["SyncGroup"]: api_groups.sync_group,
            API_KEYS["Heartbeat"]: api_groups.heartbeat,
            API_KEYS["LeaveGroup"]: api_groups.leave_group,
            API_KEYS["OffsetCommit"]: api_groups.offset_commit,
            API_KEYS["OffsetFetch"]: api_groups.offset_fetch,
            API_KEYS["DescribeGroups"]: api_groups.describe_groups,
            API_KEYS["ListGroups"]: api_groups.list_groups,
        }
        if sasl_users is not None:
            self._handlers[API_KEYS["SaslHandshake"]] = api_sasl.sasl_handshake
            self._handlers[API_KEYS["SaslAuthenticate"]] = api_sasl.sasl_authenticate

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
        return await handler(self, header, body, connection)

    @staticmethod
    def _check_login(connection, header: RequestHeader) -> None:
        """Raise CloseConnection for a request the connection may not make yet; set
        the principal the rest of this request's task acts for."""
        state = connection.state
        if state.get("sasl_failed"):
            raise CloseConnection(f"api {header.api_key} after a failed SASL login")
        principal = state.get("principal")
        if principal is None and header.api_key not in _BEFORE_LOGIN:
            raise CloseConnection(f"api {header.api_key} v{header.api_version} before a SASL "
                                  f"login (only ApiVersions, SaslHandshake and "
                                  f"SaslAuthenticate are served until then)")
        PRINCIPAL.set(principal)   # this request's task only: each has its own context


_BEFORE_LOGIN = frozenset({API_KEYS["ApiVersions"], API_KEYS["SaslHandshake"],
                           API_KEYS["SaslAuthenticate"]})
