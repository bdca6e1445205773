"""CurveZMQ encryption and authentication of clients, and ACL checks, at the router.

Runs in the server process. With a server secret key the router's socket is a
CURVE server: traffic is encrypted, and pyzmq's ZAP authenticator (a thread
on the router's ZeroMQ context) lets a client finish the handshake only if
its public key is one of the ``*.key`` files in the authorized-keys
directory. An unauthenticated client never gets a reply. ZeroMQ then stamps
every message with the client's public key (the ``User-Id`` property), which
the router checks against the ACL for each request: an authenticated client
without the grant gets a ``notAuthorized`` error. Both kinds of refusal are
logged.

Keys are ZeroMQ certificate files as ``plinth keygen`` (zmq.auth) writes them.
The hop from router to shards stays inside the cluster and is not encrypted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from plinth import protocol
from plinth.router.acl import Acl
from plinth.errors import InvalidConfigError

log = logging.getLogger(__name__)


class Security:
    def __init__(self, server_secret_key_file: Path, authorized_keys_dir: Path,
                 acl_file: Path | None = None):
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
        self._authorized = self._load_authorized()
        self.acl = Acl.load(acl_file) if acl_file is not None else None
        self._auth: ThreadAuthenticator | None = None

    def _load_authorized(self) -> set[str]:
        keys = set()
        for path in sorted(self.authorized_keys_dir.glob("*.key")):
            public, _ = zmq.auth.load_certificate(str(path))
            keys.add(public.decode())
        log.info("%d authorized client keys in %s", len(keys), self.authorized_keys_dir)
        return keys

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP: may this client key connect? (authenticator thread)"""
        key = client_key.decode() if isinstance(client_key, bytes) else client_key
        if key in self._authorized:
            return True
        log.warning("refused a client with key %s... : not in %s", key[:8], self.authorized_keys_dir)
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

    def authorize(self, frame: zmq.Frame, request: protocol.Request) -> None:
        """Raise NotAuthorizedError unless the sender's key has the grant (router loop)."""
        if self.acl is None:
            return
        client_key = frame.get("User-Id") or ""
        try:
            self.acl.check(client_key, request.kind, _topics_of(request))
        except Exception as exc:
            log.warning("denied %s from %s...: %s", request.kind, client_key[:8], exc)
            raise

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()


def _topics_of(request: protocol.Request) -> list[str]:
    """The topics a request acts on, for the ACL."""
    match request:
        case protocol.GroupHeartbeatRequest(topics=topics) | protocol.MetadataRequest(topics=topics):
            return list(topics)
        case protocol.CommitOffsetsRequest(offsets=offsets) | \
                protocol.ResetOffsetsRequest(offsets=offsets):
            return sorted({topic for topic, _ in offsets})
    topic = getattr(request, "topic", "")
    return [topic] if topic else []
