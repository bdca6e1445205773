"""CurveZMQ encryption and authentication of clients, and ACL checks, at the router.

Runs in the server process. With a server secret key the router's socket is a
CURVE server: traffic is encrypted, and pyzmq's ZAP authenticator (a thread
on the router's ZeroMQ context) lets a client finish the handshake only if
its public key is one of the ``*.key`` files in the authorized-keys
directory. An unauthenticated client never gets a reply. ZeroMQ then stamps
every message with the client's public key (the ``User-Id`` property), which
the router checks against the ACL (router/acl.py) for each request: an
authenticated client without the grant gets a ``notAuthorized`` error. Both
kinds of refusal are logged; a refused handshake, which anyone can cause, at
most once per client key per UNAUTHENTICATED_LOG_INTERVAL_S (plinth/log_limit.py),
the next line saying how many were dropped, and at most
UNAUTHENTICATED_LOG_LINES_MAX such lines in all per interval (a key costs nothing
to make).

Revocation. ``reload`` (SIGHUP to the process, plinth/server.py) reads the
authorized keys and the ACL again, swapping each whole, or keeps both as they
were if either file is refused. CurveZMQ checks a key only at the handshake,
so the router also checks each request's ``User-Id`` against the allow-list in
force (``is_admitted``): a removed key's open connections are refused at their
next request, not served until they reconnect.

The server's secret key file must be private (mode 0600, as ``plinth keygen``
writes it): one that others may read is refused, naming its mode and the
chmod that fixes it (plinth/secret_files.py).

Answers that would show more than the client may see are cut: listGroups by
the admin bridge (admin_bridge.py), fetchOffsets here (``OffsetsFilter``): the
router remembers the grants of each fetchOffsets it forwards and, when the
shard's answer comes back, keeps only the partitions of topics the client may
consume.

The Kafka listener (router/kafka/) reaches this router as a client with one
key pair per SASL user, made in memory at its start (and for a user added by a
reload of its users file, SIGHUP too) and let in by ``admit_internal``; ``client_key`` turns such a key into ``"User:<name>"``,
so a Kafka user's requests meet that user's grants and quotas in the ACL.

Keys are ZeroMQ certificate files as ``plinth keygen`` (zmq.auth) writes them.
The hop from router to shards is authenticated with the cluster's own key pair
(plinth/cluster_keys.py), not with these keys.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from plinth import limits, protocol
from plinth.errors import (InvalidConfigError, NotAuthorizedError, TooManyRequestsError,
                           UnavailableError)
from plinth.log_limit import LogLimit
from plinth.router import reply_header
from plinth.router.acl import Acl, ClientGrants
from plinth.secret_files import check_given_secret

log = logging.getLogger(__name__)

# The code under which refused handshakes are counted (``refusals``): no reply carries
# it, as an unauthenticated client gets none.
HANDSHAKE_REFUSED = "handshakeRefused"


class Security:
    """Construct, ``start`` and ``stop`` from the router's owner; ``callback`` runs on
    the authenticator thread; ``client_key`` and ``authorize`` on the router's loop."""

    def __init__(self, server_secret_key_file: Path, authorized_keys_dir: Path,
                 acl_file: Path | None = None):
        check_given_secret(server_secret_key_file, "the CurveZMQ server secret key")
        try:
            self.public_key, self.secret_key = zmq.auth.load_certificate(str(server_secret_key_file))
        except (OSError, ValueError) as exc:
            raise InvalidConfigError(f"cannot load the server key {server_secret_key_file}: {exc}") from None
        if self.secret_key is None:
            raise InvalidConfigError(f"{server_secret_key_file} holds no secret key; pass the "
                                     f".key_secret file that `plinth keygen` wrote")
        self.authorized_keys_dir = Path(authorized_keys_dir)
        if not self.authorized_keys_dir.is_dir():
            raise InvalidConfigError(f"authorized keys directory {authorized_keys_dir} does not exist")
        # Replaced whole by ``reload`` (main thread), read without a lock by the
        # authenticator thread and the router loop: a reference swap is atomic.
        self._authorized = self._load_authorized()
        # The Kafka listener's keys, one per SASL user (admit_internal): key -> "User:<name>".
        self._internal: dict[str, str] = {}
        self.acl_file = acl_file
        self.acl = Acl.load(acl_file) if acl_file is not None else None
        self._on_reload: list[Callable[[Acl | None], None]] = []
        self._auth: ThreadAuthenticator | None = None
        self._refusals_log = LogLimit(log)   # refused handshakes, per client key
        # Refusals by code, for plinth_errors_total (control/metrics.py): counted on the
        # authenticator thread and the router loop, read by the metrics thread.
        self._refusals_lock = threading.Lock()
        self._refusals: dict[str, int] = {}

    def _load_authorized(self) -> frozenset[str]:
        """The public keys of the ``*.key`` files in the directory; InvalidConfigError
        naming the file that holds none (a stray file, a secret key, a typo)."""
        keys = set()
        for path in sorted(self.authorized_keys_dir.glob("*.key")):
            try:
                public, _ = zmq.auth.load_certificate(str(path))
            except (OSError, ValueError) as exc:
                raise InvalidConfigError(
                    f"--authorized-keys {self.authorized_keys_dir}: {path} holds no CurveZMQ "
                    f"public key ({exc}); each *.key file there must be a client's public "
                    f"key as `plinth keygen` writes it") from None
            keys.add(public.decode())
        log.info("%d authorized client keys in %s", len(keys), self.authorized_keys_dir)
        return frozenset(keys)

    def reload(self) -> str | None:
        """Read the authorized keys and the ACL again (SIGHUP; the server's main thread):
        new handshakes meet the new allow-list, and every request after this, on a
        connection made before too, the new allow-list and grants (``is_admitted``,
        ``authorize``). Returns None, or why the files were refused: then the rules in
        force stay, whole (a half-read set would admit or refuse at random)."""
        try:
            authorized = self._load_authorized()
            acl = Acl.load(self.acl_file) if self.acl_file is not None else None
        except InvalidConfigError as exc:
            log.error("reload refused, the rules in force stay: %s", exc)
            return str(exc)
        removed = len(self._authorized - authorized)
        self._authorized, self.acl = authorized, acl
        for listener in self._on_reload:
            listener(acl)
        log.info("reloaded: %d authorized client keys in %s (%d removed)%s", len(authorized),
                 self.authorized_keys_dir, removed,
                 "" if self.acl_file is None else f", and the ACL {self.acl_file}")
        return None

    def on_reload(self, listener: Callable[[Acl | None], None]) -> None:
        """Call ``listener(new_acl)`` after each successful reload (on the reloading
        thread), for those that keep the ACL themselves (quotas, the Kafka listener)."""
        self._on_reload.append(listener)

    def is_admitted(self, header: zmq.Frame) -> bool:
        """Whether the key that sent ``header`` is still let in (router loop). CurveZMQ
        checks a key only at the handshake, so a connection made before its key was
        removed (``reload``) would keep its access without this: a set look-up per request."""
        key = header.get("User-Id") or ""
        if key in self._authorized or key in self._internal:
            return True
        self._count_refusal(NotAuthorizedError.code_name)
        return False

    def refusals(self) -> dict[str, int]:
        """Refusals since the start by code: ``handshakeRefused`` (the ZAP check),
        ``notAuthorized`` (the ACL, or a key removed since its connection was made).
        Any thread (the metrics endpoint's)."""
        with self._refusals_lock:
            return dict(self._refusals)

    def _count_refusal(self, code: str) -> None:
        with self._refusals_lock:
            self._refusals[code] = self._refusals.get(code, 0) + 1

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP: may this client key connect? (authenticator thread)"""
        key = client_key.decode() if isinstance(client_key, bytes) else client_key
        if key in self._authorized or key in self._internal:
            return True
        self._count_refusal(HANDSHAKE_REFUSED)
        self._refusals_log.warning(key, "refused a client with key %s...: not in %s",
                                   key[:8], self.authorized_keys_dir)
        return False

    def start(self, context: zmq.Context) -> None:
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (the router's front socket, before bind) a CURVE server."""
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_server = True

    def admit_internal(self, principals: dict[str, str]) -> None:
        """Let in the Kafka listener's keys (Z85 public key -> the principal it stands
        for, ``"User:<name>"``): ``client_key`` names their requests by the principal,
        so the ACL checks, and the quotas meter, the Kafka user behind each. The keys
        exist only in this process's memory (router/kafka/service.py). Owner's thread
        (the main thread: the listener's start, a reload of its users file), before
        the listener uses the keys; the dict is replaced whole, which the
        authenticator thread reads without a lock."""
        self._internal = {**self._internal, **principals}

    def client_key(self, header: zmq.Frame) -> str:
        """Whose request ``header`` is: the CurveZMQ public key (Z85) of the client that
        sent it, or for the Kafka listener's keys the SASL principal (router loop)."""
        key = header.get("User-Id") or ""
        return self._internal.get(key, key)

    def authorize(self, client_key: str, request: protocol.Request) -> ClientGrants | None:
        """Raise NotAuthorizedError unless the key has the grants ``request`` needs; its
        grants (to cut the answer with), or None without an ACL (router loop)."""
        if self.acl is None:
            return None
        try:
            return self.acl.check(client_key, request)
        except NotAuthorizedError as exc:
            self._count_refusal(exc.code_name)
            log.warning("denied %s from %s...: %s", request.kind, client_key[:8], exc)
            raise

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()


class OffsetsFilter:
    """fetchOffsets answers cut to the topics the asking client may consume.

    Router loop thread only. ``expect`` remembers the grants of a fetchOffsets
    the router forwards; ``cut`` looks at every reply from a shard that has no
    payload and rewrites each fetchOffsets answer (the Reply's ``committed``
    kind, which only fetchOffsets gets). An answer whose request it does not
    remember (it waited past ACL_OFFSETS_FILTER_TTL_S) becomes unavailable,
    which clients retry: the answer is never let through uncut.
    """

    def __init__(self, clock_s=time.monotonic):
        self._clock_s = clock_s
        # (client id, request id) -> (grants, when the entry may be dropped)
        self._pending: dict[tuple[bytes, int], tuple[ClientGrants, float]] = {}

    def expect(self, client: bytes, request_id: int, grants: ClientGrants) -> None:
        """Remember a fetchOffsets about to be forwarded; TooManyRequestsError if full."""
        if len(self._pending) >= limits.ACL_OFFSETS_FILTERS_PENDING_MAX:
            self._drop_expired()
        if len(self._pending) >= limits.ACL_OFFSETS_FILTERS_PENDING_MAX:
            raise TooManyRequestsError(
                f"the router awaits {len(self._pending)} fetchOffsets answers, the limit is "
                f"{limits.ACL_OFFSETS_FILTERS_PENDING_MAX}; retry later")
        self._pending[(client, request_id)] = (
            grants, self._clock_s() + limits.ACL_OFFSETS_FILTER_TTL_S)

    def cut(self, frames: list) -> None:
        """Rewrite ``frames[1]`` if it is a fetchOffsets answer (a reply from a shard)."""
        if len(frames) != 2 or reply_header.kind_code(frames[1].buffer) != reply_header.COMMITTED:
            return
        view = protocol.decode_reply(frames[1].buffer)
        entry = self._pending.pop((frames[0].bytes, view.request_id), None)
        if entry is None:
            frames[1] = zmq.Frame(protocol.encode_error(view.request_id, UnavailableError(
                "the router no longer knew whose fetchOffsets this answered; retry")))
            return
        grants = entry[0]
        kept = {tp: offset for tp, offset in view.committed.items() if grants.may_consume_topic(tp[0])}
        if len(kept) != len(view.committed):   # the kept offsets keep their metadata
            frames[1] = zmq.Frame(protocol.encode_committed_reply(
                view.request_id, kept,
                {tp: text for tp, text in view.committed_metadata.items() if tp in kept}))

    def _drop_expired(self) -> None:
        now_s = self._clock_s()
        for entry_key in [k for k, (_, until_s) in self._pending.items() if until_s <= now_s]:
            del self._pending[entry_key]
