"""The cluster's key pair: what authenticates (and encrypts) every hop inside a broker.

Routers reach shards over ZeroMQ (the data plane). A shard's socket is a
CurveZMQ server whose ZAP handler (``ClusterAuthenticator``) lets a peer
finish the handshake only if its public key is the cluster's own: a process
that holds the cluster's secret key (a router, later a shard replicating to
another, or the controller) is in; anyone else who reaches the port (it is in
``plinth status``, or a port scan away) never gets a reply. CurveZMQ also
encrypts the hop.

One key pair serves both ends: a server uses it as its own key, a client as
its own key and as the server's. Whoever holds the secret key is a member of
the cluster, which is why the file is created with mode 0600 and never sent
to a client.

The file. ``<data dir>/cluster.key_secret``, created by ``plinth serve`` on
the first start of a data directory (``load_or_create``), in the ZeroMQ
certificate format that ``plinth keygen`` (zmq.auth) writes, so either tool
reads the other's files:

    metadata
    curve
        public-key = "<40 characters of Z85: the 32-byte public key>"
        secret-key = "<40 characters of Z85: the 32-byte secret key>"

``plinth router`` reads it with ``--cluster-key-file`` or from the server's
``--data-dir``. Shard actors on other nodes get it from the controller with
their other start arguments, through Ray: whoever can make Ray calls in the
cluster already controls every actor, so Ray's own authentication (its token)
guards the key as it guards everything else.

Same-host hops over ipc:// instead (``plinth serve --internal-hop ipc``, the
embedded mode only). CurveZMQ encrypts every message, which costs CPU on the
hottest path; on one machine the hop need not cross a network at all. Then
each shard binds ``ipc://<ipc dir>/<shard id>`` in a directory of mode 0700
(``ClusterKeys.ipc_dir``: ``<data dir>/sockets``, or a fresh temp directory
when that path is too long for a Unix socket name), and only processes of the
data directory's owner can open it: the kernel authenticates the hop, nothing
is encrypted, and nothing leaves the machine. The rule every end applies: an
``ipc://`` address is plain, a ``tcp://`` address is always CurveZMQ with the
cluster's keys; cross-node hops are therefore always CurveZMQ.

Any process or thread may use the key; a ClusterAuthenticator runs its own
thread.
"""

from __future__ import annotations

import atexit
import hmac
import logging
import os
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85

from plinth import limits
from plinth.durable_files import fsync_directory
from plinth.errors import InvalidConfigError

log = logging.getLogger(__name__)

CLUSTER_KEY_FILE = "cluster.key_secret"
# ZAP: RFC 27. The inproc endpoint is libzmq's, one per context.
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_ZAP_VERSION = b"1.0"
_ZAP_DOMAIN = "plinth-cluster"
IPC_DIR = "sockets"
# A shard's socket for direct clients, beside its hop socket: <shard id>.direct.
DIRECT_IPC_SUFFIX = ".direct"
# sun_path holds 108 bytes; "ipc://" is not part of it, the longest file name is.
_IPC_DIR_BYTES_MAX = 108 - 1 - len("/shard-000000" + DIRECT_IPC_SUFFIX)


@dataclass(frozen=True)
class ClusterKeys:
    """The cluster's CurveZMQ key pair, each key 40 bytes of Z85."""

    public_key: bytes
    secret_key: bytes
    # Shards on the server's machine listen in this 0700 directory over ipc://
    # (--internal-hop ipc); None: on TCP with CurveZMQ.
    ipc_dir: str | None = None

    def __repr__(self) -> str:   # never print a secret into a log
        return (f"ClusterKeys(public_key={self.public_key!r}, secret_key=<hidden>, "
                f"ipc_dir={self.ipc_dir!r})")

    @classmethod
    def generate(cls) -> "ClusterKeys":
        public_key, secret_key = zmq.curve_keypair()
        return cls(public_key, secret_key)

    @classmethod
    def load(cls, path: Path) -> "ClusterKeys":
        """Read a key pair file (``plinth keygen``'s ``.key_secret`` format); raises
        InvalidConfigError naming the file if it is missing or holds no secret key."""
        try:
            public_key, secret_key = zmq.auth.load_certificate(str(path))
        except (OSError, ValueError) as exc:
            raise InvalidConfigError(f"cannot read the cluster key file {path}: {exc}") from None
        if not public_key or not secret_key:
            raise InvalidConfigError(f"the cluster key file {path} holds no secret key; pass "
                                     f"the {CLUSTER_KEY_FILE} file of the server's data dir")
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            log.warning("the cluster key file %s has mode %o: anyone who can read it can "
                        "reach every shard; chmod 600 it", path, mode)
        return cls(public_key, secret_key)

    def apply_server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before bind) a CurveZMQ server for cluster members only; its
        context must run a ClusterAuthenticator, or libzmq refuses every peer."""
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)   # no ZAP handler: refuse, never allow
        sock.zap_domain = _ZAP_DOMAIN.encode()
        sock.curve_secretkey = self.secret_key
        sock.curve_publickey = self.public_key
        sock.curve_server = True

    def apply_client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before connect) a CurveZMQ client speaking as a cluster member."""
        sock.curve_serverkey = self.public_key
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key


def is_ipc(address: str) -> bool:
    """Whether a shard address is a same-host ipc:// socket (plain) rather than a
    tcp:// one (always CurveZMQ with the cluster's keys)."""
    return address.startswith("ipc://")


def make_ipc_dir(data_dir: Path) -> str:
    """The 0700 directory the shards' ipc:// sockets go in: ``<data dir>/sockets``,
    or, if that path is too long for a socket name, a fresh ``plinth-ipc-*`` temp
    directory removed at exit. Server process, holding the data dir's lock."""
    ipc_dir = (Path(data_dir) / IPC_DIR).resolve()
    if len(str(ipc_dir).encode()) > _IPC_DIR_BYTES_MAX:
        temporary = tempfile.mkdtemp(prefix="plinth-ipc-")   # mode 0700
        atexit.register(shutil.rmtree, temporary, True)
        log.info("%s is too long for socket names; the shards' sockets go to %s",
                 ipc_dir, temporary)
        return temporary
    ipc_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ipc_dir, 0o700)   # mkdir's mode obeys the umask, and an older dir may differ
    return str(ipc_dir)


def remove_ipc_dir(ipc_dir: str) -> None:
    """At a clean stop, once no shard binds in it any more: remove the sockets in
    ``ipc_dir`` (make_ipc_dir's), then the directory if nothing else is in it. A
    stopped data dir then holds no socket, which ``tar`` would skip with "socket
    ignored" (a backup, README "Backing up, restoring and copying a data dir"); a start
    makes them again, and one after a crash binds over those left (a bind to an
    ipc:// path replaces the file). A file that cannot be removed is logged, not
    raised: the stop goes on. Server process, holding the data dir's lock."""
    try:
        with os.scandir(ipc_dir) as entries:
            found = [(entry.path, stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode))
                     for entry in entries]
        for path, is_socket in found:
            if is_socket:
                Path(path).unlink(missing_ok=True)   # (a shard's close may have removed it)
        if all(is_socket for _, is_socket in found):   # else files not ours: they stay
            os.rmdir(ipc_dir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove the shards' sockets in %s at the stop: %s (a start "
                    "makes them again)", ipc_dir, exc.strerror or exc)


def load_or_create(data_dir: Path) -> ClusterKeys:
    """The key pair of the broker in ``data_dir``, created (mode 0600, durably) on the
    first start. Server process, holding the data dir's lock, before anything starts."""
    path = Path(data_dir) / CLUSTER_KEY_FILE
    if not path.exists():
        keys = ClusterKeys.generate()
        _write_new_key_file(path, keys)
        log.info("created the cluster key pair %s", path)
        return keys
    return ClusterKeys.load(path)


def _write_new_key_file(path: Path, keys: ClusterKeys) -> None:
    # Created 0600 from the first byte (never readable by others, even for a moment),
    # fsynced, then renamed into place: a crash leaves no key file or a whole one.
    text = ("#   Plinth's cluster key pair: whoever holds this file can reach every shard.\n"
            "#   DO NOT GIVE IT TO CLIENTS nor change its permissions.\n\n"
            "metadata\ncurve\n"
            f"    public-key = \"{keys.public_key.decode()}\"\n"
            f"    secret-key = \"{keys.secret_key.decode()}\"\n").encode()
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)   # an older .tmp may have had other bits
        os.write(fd, text)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(path.parent)


class ClusterAuthenticator:
    """The ZAP handler of one ZeroMQ context: a peer's CURVE handshake succeeds only
    if its public key is the cluster's. Every other mechanism and key is refused
    (and counted; one log line per REFUSALS_LOGGED_EVERY refusals, so a scan cannot
    flood the log).

    ``start()`` before binding any socket that ``apply_server`` set up, ``stop()``
    after closing them; both from the owner's thread. The handler runs on its own
    thread, which owns the ZAP socket."""

    REFUSALS_LOGGED_EVERY = 1000

    def __init__(self, context: zmq.Context, keys: ClusterKeys, owner: str):
        self._context = context
        self._public_key = zmq.utils.z85.decode(keys.public_key)
        self._owner = owner
        self.refused = 0
        self._thread: threading.Thread | None = None
        self._stop_endpoint = f"inproc://plinth-zap-stop-{id(self)}"

    def start(self) -> None:
        zap = self._context.socket(zmq.REP)
        zap.setsockopt(zmq.LINGER, 0)
        zap.bind(_ZAP_ENDPOINT)
        stop = self._context.socket(zmq.PAIR)
        stop.bind(self._stop_endpoint)
        self._stopper = self._context.socket(zmq.PAIR)
        self._stopper.connect(self._stop_endpoint)
        self._thread = threading.Thread(target=self._run, args=(zap, stop), daemon=True,
                                        name=f"{self._owner}-zap")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopper.send(b"stop")
        self._thread.join(limits.CLUSTER_ZAP_STOP_WAIT_S)
        self._stopper.close(linger=0)
        self._thread = None

    def _run(self, zap: zmq.Socket, stop: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(stop, zmq.POLLIN)
        try:
            while stop not in dict(poller.poll()):
                zap.send_multipart(self.answer(zap.recv_multipart()))
        finally:
            zap.close(linger=0)
            stop.close(linger=0)

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request (RFC 27): [version, request id, domain, address,
        identity, mechanism, credentials...] -> [version, request id, status code,
        status text, user id, metadata]."""
        if len(request) < 6 or request[0] != _ZAP_VERSION:
            return [_ZAP_VERSION, request[1] if len(request) > 1 else b"", b"400",
                    b"malformed ZAP request", b"", b""]
        request_id, address, mechanism, credentials = request[1], request[3], request[5], request[6:]
        if mechanism == b"CURVE" and len(credentials) == 1 \
                and hmac.compare_digest(credentials[0], self._public_key):
            return [_ZAP_VERSION, request_id, b"200", b"OK", b"plinth-cluster", b""]
        self.refused += 1
        if self.refused % self.REFUSALS_LOGGED_EVERY == 1:
            log.warning("%s refused a %s peer from %s: not the cluster's key (%d refused so far)",
                        self._owner, mechanism.decode(errors="replace"),
                        address.decode(errors="replace"), self.refused)
        return [_ZAP_VERSION, request_id, b"400", b"not a member of the cluster", b"", b""]
