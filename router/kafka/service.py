"""The Kafka listener of one router process: options, start and stop.

``plinth serve --kafka-listen HOST:PORT`` and ``plinth router --kafka-listen
HOST:PORT`` start one (default: none; Kafka's usual port is 9092), beside the
router's ZeroMQ socket, in the same process: the listener thread
(listener.py) answers Kafka clients through the backend (backend.py), which
talks to this router's own socket. ``--kafka-advertised HOST:PORT`` is what
clients are told to connect to (Kafka's advertised.listeners), when it
differs from the address bound (a container, a NAT); by default the bound one.

Security (issue 15), as for the ZeroMQ listener and its CurveZMQ:

- ``--kafka-tls-cert FILE --kafka-tls-key FILE``: every connection is TLS
  (PEM files). Clients use SASL_SSL (or SSL). The key must be unencrypted
  (the server runs unattended: an encrypted one is refused at once, never
  prompted for) and, as the users file, mode 0600 (plinth/secret_files.py).
  A certificate that has expired is refused at startup, since every client's
  handshake would fail on it; one that expires within
  TLS_CERT_EXPIRY_WARNING_S, or is not valid yet (a clock may be off; it
  becomes valid by itself), is logged as a WARNING naming the file and date.
- ``--kafka-sasl-users FILE``: every connection must log in, SASL PLAIN or
  SCRAM-SHA-256, as a user of the file (sasl_users.py; ``plinth kafka-user
  add`` writes it), before anything but ApiVersions is served (gateway.py).
  PLAIN sends the password itself, so it is offered only where it cannot be
  read on the way: with TLS, or on a loopback address. Elsewhere (a
  non-loopback listener without TLS, which needs ``--allow-insecure``) only
  SCRAM-SHA-256 is, whose password never crosses the wire; Kafka allows
  PLAIN over SASL_PLAINTEXT, Plinth does not.
- On an address that is not loopback, both are required unless
  ``--allow-insecure`` is given (the same switch that lets the ZeroMQ
  listener go plaintext); the refusal names what is missing.
- Beside a router with CurveZMQ keys, SASL is required on any address: the
  listener is a way into that router and must not be one without a login.
  Its backend then reaches the router with a key pair per user, made here in
  memory at each start and let in by the router's Security
  (``admit_internal``), which names each key's requests ``"User:<name>"``:
  the ACL's grants and quotas for that name apply to the Kafka user exactly
  as a key's to a Plinth client. Without CurveZMQ the router has no ACL (it
  needs the keys), so every user who logs in may do everything.

Reloading the users (SIGHUP). ``plinth serve`` and ``plinth router`` call
``reload_users`` on the process's main thread when they get SIGHUP
(plinth/server.py: the signal handler only sets an event, which the main
thread waits on), beside the router's keys and ACL. It reads and checks the
file as at start (``check_given_secret`` too) on that thread, then swaps the
gateway's users whole; the listener's thread (``kafka-listener-HOST:PORT``,
its event loop serving every connection) reads them without a lock, once per
login or request check, and hands a PLAIN check thread that snapshot
(gateway.py, api_sasl.py). A file refused changes nothing: the users
in force stay, whole, and the log says why at ERROR. Beside CurveZMQ, a user
added gets its internal key pair, let in by the router's Security, before the
swap, so its first request finds it; a removed user's key stays let in but
unused: the gateway serves none of its requests (its open connections are
closed at their next one), and the key never leaves this process.

Construct, ``start`` and ``stop`` from the router's owner (the server's main
thread).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq

from plinth import limits
from plinth.errors import InvalidConfigError
from plinth.loopback import is_loopback
from plinth.router.kafka.api_sasl import mechanisms_offered
from plinth.router.kafka.backend import PlinthBackend
from plinth.router.kafka.gateway import KafkaCluster, KafkaGateway
from plinth.router.kafka.listener import KafkaListener
from plinth.router.kafka.sasl_users import ScramCredential, load_users, users_changed
from plinth.secret_files import check_given_secret

log = logging.getLogger(__name__)

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
    tls_cert: Path | None = None     # PEM certificate (chain) for TLS
    tls_key: Path | None = None      # its PEM private key
    sasl_users: Path | None = None   # the users file (sasl_users.py)
    allow_insecure: bool = False     # no TLS or SASL on a non-loopback address
    connections_max: int = limits.KAFKA_CONNECTIONS_MAX   # Kafka's max.connections

    def check(self, router_has_keys: bool) -> None:
        """InvalidConfigError for what this listener cannot serve safely, naming what
        is missing; loads the TLS files and the users file, so that they fail here."""
        host, _ = parse_host_port(self.listen, "--kafka-listen")
        if not (limits.KAFKA_CONNECTIONS_MAX_MIN <= self.connections_max
                <= limits.KAFKA_CONNECTIONS_MAX_MAX):
            raise InvalidConfigError(
                f"--kafka-connections-max {self.connections_max} is out of its bounds: give "
                f"{limits.KAFKA_CONNECTIONS_MAX_MIN:,} to {limits.KAFKA_CONNECTIONS_MAX_MAX:,} "
                f"(default {limits.KAFKA_CONNECTIONS_MAX:,})")
        if self.advertised is not None:
            parse_host_port(self.advertised, "--kafka-advertised")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidConfigError("--kafka-tls-cert and --kafka-tls-key go together: give "
                                     "both, or neither")
        self.ssl_context()
        if self.tls_cert is not None:
            check_certificate_dates(self.tls_cert)
        self.users()
        missing = [what for what, given in (("TLS (--kafka-tls-cert, --kafka-tls-key)",
                                             self.tls_cert is not None),
                                            ("SASL (--kafka-sasl-users)",
                                             self.sasl_users is not None)) if not given]
        if not is_loopback(host) and missing and not self.allow_insecure:
            raise InvalidConfigError(
                f"refusing --kafka-listen {self.listen} without {' and '.join(missing)}: anyone "
                f"who can reach it could read every record sent, or read and write every "
                f"topic. Give them, or --allow-insecure to do it anyway")
        if router_has_keys and self.sasl_users is None:
            raise InvalidConfigError(
                "--kafka-listen beside --curve-secret-key needs --kafka-sasl-users: the Kafka "
                "listener would otherwise let anyone past the router's keys and ACL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS server context, or None; InvalidConfigError naming the files."""
        if self.tls_cert is None:
            return None
        check_given_secret(self.tls_key, "the Kafka TLS key (--kafka-tls-key)")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key, password=_refuse_passphrase)
        except _PassphraseAsked:
            raise InvalidConfigError(
                f"the Kafka TLS key {self.tls_key} is encrypted (it asks for a passphrase): "
                f"give an unencrypted PEM key, mode 600 (for example `openssl pkey -in "
                f"{self.tls_key} -out plain.key`); the server runs unattended and never "
                f"prompts") from None
        except (OSError, ssl.SSLError) as exc:
            raise InvalidConfigError(f"cannot load the Kafka TLS certificate {self.tls_cert} "
                                     f"with key {self.tls_key}: {exc}") from None
        return context

    def users(self) -> dict[str, ScramCredential] | None:
        if self.sasl_users is None:
            return None
        check_given_secret(self.sasl_users, "SASL users file (--kafka-sasl-users)")
        return load_users(self.sasl_users)

    def plain_allowed(self) -> bool:
        """Whether SASL PLAIN may be offered: its password is sent as it is, so only
        inside TLS, or on loopback where it crosses no network."""
        return self.tls_cert is not None or is_loopback(
            parse_host_port(self.listen, "--kafka-listen")[0])


class _PassphraseAsked(Exception):
    """The TLS key is encrypted: load_cert_chain asked for its passphrase."""


def _refuse_passphrase():
    """load_cert_chain's password callable: never prompt (OpenSSL would read the
    terminal, blocking a server forever; without one it fails unclearly)."""
    raise _PassphraseAsked


def check_certificate_dates(cert: Path, now_s: float | None = None) -> None:
    """InvalidConfigError if the certificate in ``cert`` has expired; a WARNING if it
    expires within TLS_CERT_EXPIRY_WARNING_S or is not valid yet. Both name the file
    and the date. Reads the first certificate of the PEM file (the server's own)."""
    now_s = time.time() if now_s is None else now_s
    try:
        decoded = ssl._ssl._test_decode_cert(str(cert))   # CPython's own X.509 decoder
        not_before, not_after = decoded["notBefore"], decoded["notAfter"]
        not_before_s = ssl.cert_time_to_seconds(not_before)
        not_after_s = ssl.cert_time_to_seconds(not_after)
    except (AttributeError, KeyError, OSError, ValueError, ssl.SSLError) as exc:
        log.warning("cannot read the validity dates of the Kafka TLS certificate %s (%s): "
                    "not checked", cert, exc)
        return
    if not_after_s <= now_s:
        raise InvalidConfigError(
            f"the Kafka TLS certificate {cert} expired on {not_after} (notAfter): every "
            f"client would fail its TLS handshake. Renew it")
    if not_after_s - now_s < limits.TLS_CERT_EXPIRY_WARNING_S:
        log.warning("the Kafka TLS certificate %s expires on %s (notAfter), in %.1f days: "
                    "renew it before then, or every client's TLS handshake will fail",
                    cert, not_after, (not_after_s - now_s) / 86400)
    if not_before_s > now_s:
        log.warning("the Kafka TLS certificate %s is not valid before %s (notBefore): until "
                    "then clients fail their TLS handshake (is this machine's clock right?)",
                    cert, not_before)


def security_summary(tls: bool, users: int | None, plain_allowed: bool) -> str:
    """The startup line's account of a listener's TLS and SASL (``users``: how many
    may log in; None: no login asked), a sentence for each combination."""
    said = "TLS" if tls else "no TLS (plaintext)"
    if users is None:
        return f"{said}, no SASL login (every client is served as it connects)"
    why = "" if plain_allowed else (": not PLAIN, which would send passwords in the clear "
                                    "to a non-loopback address without TLS")
    return (f"{said}, and a SASL login as one of {users} users by "
            f"{' or '.join(mechanisms_offered(plain_allowed))}{why}")


def router_url_for(listen_url: str) -> str:
    """The URL this process's own router is reached at from inside the process."""
    scheme, _, address = listen_url.partition("://")
    host, _, port = address.rpartition(":")
    if host.strip("[]") in _ANY_HOSTS:
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


class KafkaService:
    """One Kafka listener answering through this process's router.

    ``brokers()``: every router's advertised Kafka HOST:PORT as the routing table
    has them now (this one's too, once the controller has heard of it).
    ``security``: the router's Security when it has CurveZMQ keys (None: a plaintext
    router); the service then lets its users' internal keys in (see the module's
    docstring). ``log_dir``: the broker's data dir, absolute, for DescribeLogDirs
    ("": unknown, a ``plinth router`` without ``--data-dir``). ``in_process``: a
    plaintext router's inproc URL and ZeroMQ context (``Router.in_process_url``,
    ``Router.context``), which the backend then uses instead of TCP."""

    def __init__(self, options: KafkaListenerOptions, router_listen_url: str, cluster_id: str,
                 brokers: Callable[[], tuple[str, ...]] = tuple, security=None,
                 log_dir: str = "", in_process: tuple[str, zmq.Context] | None = None):
        self.options = options
        self._log_dir = log_dir
        self._acl = None if security is None else security.acl
        self._security = security
        self._users = options.users()   # replaced whole by reload_users (main thread)
        # The backend's internal key pairs (CurveZMQ), by user: reload_users adds to it.
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._gateway: KafkaGateway | None = None
        if in_process is not None and security is None:
            url, context = in_process
            self._backend = PlinthBackend(url, shared_context=context)
        else:
            self._backend = PlinthBackend(router_url_for(router_listen_url),
                                          self._internal_keys(security))
        self._cluster_id = cluster_id
        self._brokers = brokers
        self._listener: KafkaListener | None = None
        self.address: tuple[str, int] | None = None
        self.advertised = ""

    def _internal_keys(self, security):
        """(router's public key, {user: key pair}) for a CurveZMQ router, else None."""
        if security is None:
            return None
        assert self._users is not None, "options.check refuses CurveZMQ without SASL"
        self._admit_keys(self._users)
        return security.public_key, self._keys

    def _admit_keys(self, users) -> None:
        """Make a key pair for each of ``users`` that has none and let them into the
        router. Main thread. The backend reads ``_keys`` on the listener's thread
        (``in`` and ``[]``, one at a time), so entries are only added, each by one
        dict store, which the GIL makes atomic; the router admits them first. A
        removed user's key is kept (added back, the user gets it again): they grow
        only with the distinct names the operator's files ever held."""
        new = {user: zmq.curve_keypair() for user in users if user not in self._keys}
        if not new:
            return
        self._security.admit_internal({public.decode(): f"User:{user}"
                                       for user, (public, _) in new.items()})
        for user, pair in new.items():
            self._keys[user] = pair

    def start(self) -> tuple[str, int]:
        """Bind and serve; returns the bound (host, port)."""
        host, port = parse_host_port(self.options.listen, "--kafka-listen")
        gateway = self._gateway = KafkaGateway(
            self._backend, None, self._users, auto_create_topics=self.options.auto_create_topics,
            log_dir=self._log_dir, acl=self._acl)
        if self._security is not None:   # DescribeAcls describes the ACL reloaded (SIGHUP)
            self._security.on_reload(lambda acl: setattr(gateway, "acl", acl))
        context = self.options.ssl_context()
        gateway.tls = context is not None
        gateway.sasl_plain_allowed = self.options.plain_allowed()
        before_login, per_address, per_principal = limits.kafka_connection_limits(
            self.options.connections_max)
        self._listener = KafkaListener(
            host, port, gateway.handle, ssl_context=context,
            connections_max=self.options.connections_max,
            connections_before_login_max=before_login,
            connections_before_login_per_address_max=per_address,
            connections_per_principal_max=per_principal,
            first_request_bytes_max=(None if self._users is None
                                     else limits.KAFKA_REQUEST_BYTES_BEFORE_LOGIN_MAX))
        self.address = self._listener.start()
        host, port = (parse_host_port(self.options.advertised, "--kafka-advertised")
                      if self.options.advertised else self.address)
        self.advertised = f"{host}:{port}"
        gateway.cluster = KafkaCluster(self.advertised, self._cluster_id, self._brokers)
        log.info("Kafka listener on %s:%d, advertised as %s: %s", *self.address,
                 self.advertised, security_summary(
                     self.options.tls_cert is not None,
                     None if self._users is None else len(self._users),
                     self.options.plain_allowed()))
        return self.address

    def error_counts(self):
        """The listener's error answers and closed connections (error_counts.py), for
        the metrics endpoint, or None before ``start``."""
        return None if self._listener is None else self._listener.counts

    def memory_bytes(self) -> dict[str, tuple[int, int]]:
        """What the listener holds against its budget, as Router.memory_bytes: request
        bytes read and not yet answered (bytes now, the limit); {} before ``start``.
        Any thread (a snapshot)."""
        if self._listener is None:
            return {}
        return {"kafka_requests_in_flight": (self._listener.request_bytes_in_flight(),
                                             self._listener.request_bytes_in_flight_total_max)}

    def reload_users(self) -> str | None:
        """Read the SASL users file again (SIGHUP; the main thread, see the module):
        new logins meet the new users at once, and a connection whose user was
        removed or whose password changed is closed at its next request. Returns
        None, or why the file was refused: then the users in force stay, whole.
        Without a users file, nothing to do: None."""
        if self.options.sasl_users is None or self._gateway is None:
            return None
        try:
            users = self.options.users()
        except InvalidConfigError as exc:
            log.error("reload refused, the SASL users in force stay: %s", exc)
            return str(exc)
        change = users_changed(self._users, users)
        if self._security is not None:
            self._admit_keys(users)   # before the swap: a new user's first request finds its key
        self._users = self._gateway.sasl_users = users
        log.info("reloaded: %d Kafka SASL users in %s (%d added, %d removed, %d changed)%s",
                 len(users), self.options.sasl_users, change.added, change.removed,
                 change.changed, "" if not change.cut_off else
                 "; the connections of those removed or changed are closed at their next "
                 "request")
        return None

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self._backend.close()
