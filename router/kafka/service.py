"""The Kafka listener of one router process: options, start and stop.

``plinth serve --kafka-listen HOST:PORT`` and ``plinth router --kafka-listen
HOST:PORT`` start one (default: none; Kafka's usual port is 9092), beside the
router's ZeroMQ socket, in the same process: the listener thread
(listener.py) answers Kafka clients through the backend (backend.py), which
talks to this router's own socket. ``--kafka-advertised HOST:PORT`` is what
clients are told to connect to (Kafka's advertised.listeners), when it
differs from the address bound (a container, a NAT); by default the bound one.

Security: the Kafka listener has neither TLS nor SASL yet, so it binds only
to a loopback address, and not beside a router that requires CurveZMQ keys
(its backend would have no key to reach the router with). Both are refused
at start with a message that says so.

Construct, ``start`` and ``stop`` from the router's owner (the server's main
thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from plinth.errors import InvalidConfigError
from plinth.router.kafka.backend import PlinthBackend
from plinth.router.kafka.gateway import KafkaCluster, KafkaGateway
from plinth.router.kafka.listener import KafkaListener

log = logging.getLogger(__name__)

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_ANY_HOSTS = ("0.0.0.0", "*", "", "::")


def parse_host_port(value: str, what: str) -> tuple[str, int]:
    """("host", port) of "HOST:PORT"; InvalidConfigError naming ``what`` otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidConfigError(f"{what} {value!r} is not HOST:PORT with a port in 0..65535 "
                                 f"(for example 127.0.0.1:9092)")
    return host, int(port)


@dataclass(frozen=True)
class KafkaListenerOptions:
    listen: str                      # HOST:PORT to bind (port 0: any free port)
    advertised: str | None = None    # HOST:PORT clients are told; None: the bound one
    auto_create_topics: bool = False   # Kafka's auto.create.topics.enable

    def check(self, router_has_keys: bool) -> None:
        """InvalidConfigError for what this listener cannot serve safely yet."""
        host, _ = parse_host_port(self.listen, "--kafka-listen")
        if self.advertised is not None:
            parse_host_port(self.advertised, "--kafka-advertised")
        if host not in _LOOPBACK_HOSTS:
            raise InvalidConfigError(
                f"--kafka-listen {self.listen}: the Kafka listener has no TLS or SASL yet, so "
                f"it listens on a loopback address only ({', '.join(_LOOPBACK_HOSTS)})")
        if router_has_keys:
            raise InvalidConfigError(
                "--kafka-listen cannot be used with --curve-secret-key yet: the Kafka "
                "listener has no SASL to map Kafka users onto the router's ACL")


def router_url_for(listen_url: str) -> str:
    """The URL this process's own router is reached at from inside the process."""
    scheme, _, address = listen_url.partition("://")
    host, _, port = address.rpartition(":")
    if host.strip("[]") in _ANY_HOSTS:
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


class KafkaService:
    """One Kafka listener answering through this process's router."""

    def __init__(self, options: KafkaListenerOptions, router_listen_url: str, cluster_id: str,
                 brokers: Callable[[], tuple[str, ...]] = tuple):
        """``brokers()``: every router's advertised Kafka HOST:PORT as the routing table
        has them now (this one's too, once the controller has heard of it)."""
        self.options = options
        self._backend = PlinthBackend(router_url_for(router_listen_url))
        self._cluster_id = cluster_id
        self._brokers = brokers
        self._listener: KafkaListener | None = None
        self.address: tuple[str, int] | None = None
        self.advertised = ""

    def start(self) -> tuple[str, int]:
        """Bind and serve; returns the bound (host, port)."""
        host, port = parse_host_port(self.options.listen, "--kafka-listen")
        gateway = KafkaGateway(self._backend, None,
                               auto_create_topics=self.options.auto_create_topics)
        self._listener = KafkaListener(host, port, gateway.handle)
        self.address = self._listener.start()
        host, port = (parse_host_port(self.options.advertised, "--kafka-advertised")
                      if self.options.advertised else self.address)
        self.advertised = f"{host}:{port}"
        gateway.cluster = KafkaCluster(self.advertised, self._cluster_id, self._brokers)
        log.info("Kafka listener on %s:%d, advertised as %s", *self.address, self.advertised)
        return self.address

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self._backend.close()
