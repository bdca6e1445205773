"""The data plane of one shard: a ZeroMQ ROUTER socket and the partitions it serves.

Runs inside a shard actor process (see actor.py), but needs no Ray: tests run
it alone with real sockets and a real disk. This module is the shard's
lifecycle, its loop and the dispatch of requests; the work is done by

    partition.py        one partition: its log, high watermark, producers
    group_commit.py     append many, fsync once, then acknowledge
    fetch_purgatory.py  fetches parked at the log end until it moves
    group_requests.py   consumer group requests, to the coordinator and back
    shard_stats.py      counters, rates, latency histograms
    shard_replication.py  which partitions are led here, followed, or neither
      replica_server.py   the leader side: follower fetches, the high watermark
      replica_fetcher.py  the follower side: fetching from the leaders
    tier/remote_log_manager.py  uploads to object storage, local and remote retention

Replication. A partition opened without a leadership record has one copy,
here (replication factor 1), and works as it always did. One with a record
(``set_leadership``, or ``open_partition(leadership=...)``) is led here, or
followed, or offline: produce is taken only where it is led (NotLeaderError
elsewhere), its high watermark moves as its in-sync replicas hold the log,
and an acks="all" produce is answered once the high watermark passes it
(group_commit.py). See shard_replication.py.

Threads. One loop thread owns the sockets and every Partition; nothing else
touches them (group commit's fsync threads flush logs only while the loop
waits for them). Other threads (the Ray actor's) ask the loop to do things
through ``call()``, which queues a function, wakes the loop through a pipe and
waits for the result. So no lock guards log state, and nothing can change a
log between checking it and using it. With --tier-url, one uploader thread
(tier/remote_log_manager.py) owns the object store; the loop hands it rolled
segments and gets new remote views back through ``_post``, never waiting on it.

Restarts. A shard actor restarted by Ray binds its socket before it reopens its
partitions (actor.py), and on ipc:// the socket's address is its old one, so
routers' connections come back at once and requests arrive while the
partitions are still being recovered. ``start(recovering=True)`` holds the
groups until the actor calls ``recovered()`` (every partition of its manifest
open, the partition counts set): until then every group request, Plinth's or
Kafka's classic ones, is answered unavailable naming the shard and that it is
recovering (a classic one COORDINATOR_LOAD_IN_PROGRESS, as Kafka's loading
coordinator), which clients retry. Answered earlier, a commit was refused as
"unknown topic" (the partition counts were not set yet) and every member was
told it was unknown. Produce and fetch need no hold: a partition not open yet
is answered unavailable by ``_require``, and one already open is recovered.

Requests arrive from a router as [router id][client id][Request][payload]?
(a group request's payload is the client's key, group_requests.py) and are
answered as [router id][client id][Reply][payload]?.

Direct clients. With ``direct_clients`` the shard binds a second ROUTER (the
broker offers it only when its client listener is plaintext on loopback, see
plinth/server.py): ``ipc://<ipc dir>/<shard id>.direct`` when the hop socket is
ipc:// too (the embedded Ray), else plain TCP on 127.0.0.1. There clients send
produce and fetch requests for partitions led here without the router hop:
[client id][Request][payload]?, answered [client id][Reply][payload]?. It has
the router's front-socket bounds: the frame size, the high-water marks, the
frame count of each kind, at most CLIENT_REQUESTS_IN_FLIGHT_MAX requests per
client, at most CLIENT_REPLY_BYTES_UNSENT_MAX bytes of fetch replies a client
has not read (plinth/unsent_replies.py), and over TCP a connection whose
replies stall is closed. Any other kind is refused (malformedRequest): group
and replication requests, which carry identities and keys the router vouches
for, come only through the router's hop.
Such a request's envelope is [a direct marker][client id]: the marker (a frame
object of this module, compared by identity) says that the reply goes to the
direct socket and whether the request counted toward its client's bound (an
acks=0 produce does not: it gets no reply unless it fails), so everything
that keeps envelopes (group commit, the purgatory) stays as it is.

A loop round: run the queued control calls; drain up to
GROUP_COMMIT_REQUESTS_MAX requests without blocking, appending every produce
to its log; commit (group_commit.py), which makes the appends durable as the
fsync policy says, moves the high watermarks and acknowledges; then the
timers: expired parked fetches, expired group members, stats, retention.

Reads. A consumer sees records up to the partition's high watermark: the
durable end under fsync_policy "always", the written end otherwise, so no
consumer ever reads a record that a crash could take back. A fetch at the
high watermark is parked until an append moves it or the fetch's wait ends;
the parked places are shared fairly between clients (fetch_purgatory.py).
A fetch below the local log start, in a segment in object storage
(``Partition.remote``), goes to the reader thread of tier/remote_fetcher.py,
whose answer comes back through ``_post`` and is sent by the loop, or, if it
is not back within REMOTE_FETCH_WAIT_MS_MAX, the fetch is answered with no
records and the read goes on (tier/remote_fetch_waits.py; a look-up by time
whose record is in object storage likewise waits REMOTE_TIME_LOOKUP_WAIT_MS_MAX,
then is answered requestTimedOut, retriable); so does one
in a gap of the local log (a range that lived on another shard, since tiered:
issue 14) that the remote log holds. While a tiered partition's remote view is
not the store's yet (not listed since this shard began uploading or following
it), an offset below its log start, or in a gap or hole the view lacks, is
answered unavailable, not out of range: it may be in the store, and a consumer
told "out of range" would reset its position.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from plinth import limits, protocol, topics
from plinth.cluster_keys import DIRECT_IPC_SUFFIX, ClusterAuthenticator, ClusterKeys
from plinth.errors import (BrokerError, CorruptDataError, InternalError, MalformedRequestError,
                           NotLeaderError, OffsetOutOfRangeError, RequestTimedOutError,
                           StorageError, TooManyRequestsError, UnavailableError,
                           UnknownTopicError)
from plinth.format import batch_formats
from plinth.format.log_entry import records_from
from plinth.format.record_batch import summarize_batch
from plinth.log_limit import LogLimit
from plinth.loopback import is_loopback
from plinth.name_pages import NamesPage, page_of
from plinth.shards.deleted_partitions import DeletedPartitions
from plinth.shards.disk_reserve import DiskReserve
from plinth.shards.fetch_purgatory import FetchPurgatory
from plinth.shards.group_commit import GroupCommit
from plinth.shards.group_requests import GroupRequests, SlotLogs
from plinth.shards.leader_epochs import NO_EPOCH
from plinth.shards.partition import Partition
from plinth.shards.partition_log import delete_directory, remove_deleted_directories
from plinth.shards.partition_metadata import foreign_log, load_topic_id, set_aside
from plinth.shards.segment_files import SegmentFiles
from plinth.shards.shard_calls import (ControllerAnnouncements, Leadership, PartitionId,
                                       TieredState, TierOptions)
from plinth.shards.replica_server import Led
from plinth.shards.shard_replication import ShardReplication
from plinth.shards.shard_stats import ShardStats
from plinth.shards import time_lookup
from plinth.shards.tier.remote_fetch_waits import RemoteFetchWaits, fit
from plinth.shards.tier.remote_fetcher import (
    RemoteFetcher, RemoteRead, RemoteReadResult, answer_for_deleted, partition_read,
    remote_segment_for)
from plinth.shards.tier.remote_log_manager import (STRANDED_DELETIONS_STAT, RemoteLogManager,
                                                   stranded_deletions)
from plinth.shards.tier.remote_log_metadata import finished_segments_in_journal
from plinth.shards.tier.remote_log_view import RemoteLogView
from plinth.shards.tier.remote_segment import partition_prefix
from plinth.shards.tier.remote_time_lookup import RemoteTimeRead, RemoteTimeResult
from plinth.socket_frames import readable, recv_frames, send_frames
from plinth.unsent_replies import UnsentReplies
from plinth.wakeup import Wakeup

log = logging.getLogger(__name__)

# The first envelope frame of a direct client's request (see the module): the reply
# goes to the direct socket, and uncounts one of its client's requests (or not).
_DIRECT_COUNTED = zmq.Frame(b"")
_DIRECT_UNCOUNTED = zmq.Frame(b"")
_DIRECT_KINDS = (protocol.ProduceRequest, protocol.FetchRequest)


class ShardServer:
    """One shard's data plane. Construct and ``start()`` from the actor's thread."""

    def __init__(self, shard_id: str, data_dir: Path, bind_host: str = "127.0.0.1",
                 fsync_policy: str = "always",
                 fsync_interval_ms: int = limits.FSYNC_INTERVAL_MS_DEFAULT,
                 cluster_keys: ClusterKeys | None = None,
                 controller: ControllerAnnouncements | None = None,
                 replica_lag_time_max_ms: int = limits.REPLICA_LAG_TIME_MS_MAX_DEFAULT,
                 direct_clients: bool = False, tier: TierOptions = TierOptions(),
                 produce_free_bytes_min: int = limits.PRODUCE_FREE_BYTES_MIN_DEFAULT):
        """``cluster_keys``: the socket is a CurveZMQ server that only cluster members
        may reach, or, with their ``ipc_dir``, a plain ipc:// socket in that 0700
        directory (plinth/cluster_keys.py). Without them it is plain TCP, which only
        a loopback ``bind_host`` allows (the unit tests'). The same keys make this
        shard a client of the leaders it follows. ``controller``: asked for in-sync
        set changes of the partitions led here (None: the in-sync sets never change).
        ``replica_lag_time_max_ms``: a follower not caught up this long leaves the
        in-sync set. ``direct_clients``: also bind the direct socket for clients'
        produce and fetch (see the module), ipc:// with the keys' ``ipc_dir``, else
        plain TCP on 127.0.0.1, if ``bind_host`` is loopback too (the shard's node
        is this machine). ``tier``: the server's --tier-url and --tier-cache-bytes,
        kept as ``self.tier``: with a URL, the shard uploads its tiered partitions
        (tier/remote_log_manager.py), and fetches below a partition's local log start
        are read from object storage by a reader thread (tier/remote_fetcher.py).
        ``produce_free_bytes_min``: produces that would leave the data dir's file system
        with less free are refused (shards/disk_reserve.py; 0: none are)."""
        if cluster_keys is None and not is_loopback(bind_host):
            raise AssertionError(f"{shard_id}: a shard without the cluster's keys must bind "
                                 f"to loopback, not {bind_host}: anyone could reach it")
        self.shard_id = shard_id
        self.data_dir = Path(data_dir)
        self.disk_reserve = DiskReserve(self.data_dir, produce_free_bytes_min)
        self.bind_host = bind_host
        self._cluster_keys = cluster_keys
        self._authenticator: ClusterAuthenticator | None = None
        self.fsync_policy = fsync_policy
        self.fsync_interval_ms = fsync_interval_ms
        tier.check()
        self.tier = tier
        self._remote_reader: RemoteFetcher | None = None   # started with a tier URL
        self._remote_waits = RemoteFetchWaits()   # its fetches, each waiting a bounded time
        self._time_waits = RemoteFetchWaits.for_time_lookups()   # and its look-ups by time
        # Topic deletions of remote segments this shard cannot run (another store's, or
        # any without a tier URL), found at start: the controller refuses the start.
        self.stranded_deletions: dict = {}
        self.address = ""
        # Only on a loopback node: a direct socket on 127.0.0.1 of a node with another
        # address would be another machine's 127.0.0.1 to the clients.
        self._direct_clients = direct_clients and is_loopback(bind_host)
        self.direct_address = ""   # "" while it has no direct socket
        self._direct: zmq.Socket | None = None
        self._direct_in_flight: dict[bytes, int] = {}   # direct client id -> its counted requests
        self._direct_unsent = UnsentReplies(f"the direct socket of {shard_id}",
                                            limits.SHARD_DIRECT_REPLY_BYTES_UNSENT_MAX)
        self.stats = ShardStats()
        self._partitions: dict[tuple[str, int], Partition] = {}
        # Partitions deleted here with their topic, remembered a while: a request for one
        # is answered "topic ... was deleted", not "retry" (shards/deleted_partitions.py).
        self._deleted = DeletedPartitions()
        # Partitions reopened from the manifest whose partition.metadata names another
        # topic id than the manifest: (the manifest's id, the file's), until the
        # controller's id says which file is damaged (``_settle_topic_id``).
        self._disputed_ids: dict[tuple[str, int], tuple[str, str]] = {}
        self._segment_files = SegmentFiles(limits.SEGMENT_FILES_OPEN_MAX)   # shared by partitions
        self._group_commit = GroupCommit(shard_id, fsync_policy, fsync_interval_ms,
                                         reply=self._reply, readable=self._readable,
                                         stats=self.stats,
                                         fsync_failed=self._cut_after_failed_fsync)
        # A line per partition per interval: a disk that fails fsyncs fails every retry
        self._fsync_failures_said = LogLimit(log)
        self._purgatory = FetchPurgatory()
        self._answer_parked_fetch = self._answer_parked   # bound once, not per parked fetch
        self._groups: GroupRequests | None = None
        self._next_retention_s = 0.0
        # The partitions (keys) the current retention sweep has still to check, a
        # slice per loop pass (``_enforce_retention_slice``); empty between sweeps.
        self._retention_sweep: list[tuple[str, int]] = []
        self._next_sample_s = 0.0
        self._received_s = 0.0   # when the request being handled arrived
        self._commands: queue.Queue = queue.Queue(maxsize=limits.SHARD_COMMANDS_QUEUED_MAX)
        self._wakeup = Wakeup()
        self._stopping = False
        # Restarted and reopening its partitions (see the module): groups wait. Read
        # and cleared on the loop thread; set in start(), before the loop runs.
        self._recovering = False
        self._thread: threading.Thread | None = None
        self._lock_file = None
        self._replication = ShardReplication(
            shard_id, self._partitions, self._purgatory, self._group_commit, reply=self._reply,
            post=self._post, controller=controller, lag_time_max_ms=replica_lag_time_max_ms)
        self._roles = self._replication.roles   # read by every produce
        self._tier: RemoteLogManager | None = None
        if tier.enabled:
            self._tier = RemoteLogManager(shard_id, self.data_dir, tier.url,
                                          partitions=self._partitions, roles=self._roles,
                                          post=self._post, controller=controller,
                                          segments_gone=self._remote_segments_gone,
                                          claim=tier.claim)

    # --- Lifecycle (actor thread) ------------------------------------------

    def start(self, recovering: bool = False) -> str:
        """Lock the data dir, bind the socket, start the loop. Returns the address.
        ``recovering``: the caller reopens the shard's partitions after this returns;
        group requests are answered unavailable until it calls ``recovered()`` (see
        the module, "Restarts")."""
        self._recovering = recovering
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        self._finish_deletions()
        self._find_stranded_deletions()
        if self.tier.enabled:   # first: its cache directory may fail to open
            self._remote_reader = RemoteFetcher.open(
                self.shard_id, self.tier.url, self.data_dir, self.tier.cache_bytes,
                done=lambda result: self._post(self._remote_fetched, result))
        # Its own context: the ZAP handler is one per context, and several shards
        # (and a router) may share a process in tests.
        self._context = zmq.Context(io_threads=1)
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.MAXMSGSIZE, limits.FRAME_BYTES_MAX)
        self._socket.setsockopt(zmq.RCVHWM, limits.SOCKET_MESSAGES_HWM)
        self._socket.setsockopt(zmq.SNDHWM, limits.SOCKET_MESSAGES_HWM)
        self._socket.setsockopt(zmq.LINGER, limits.SHARD_SOCKET_LINGER_MS)
        self._groups = GroupRequests.open(self.shard_id, self.data_dir, slot_logs=SlotLogs(
            self._slot_led, self._slot_append, self._slot_check_acks_all, self._reply,
            lambda seconds: self.stats.observe("group", seconds)))
        self.address = self._bind()
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        if self._direct_clients:
            self._bind_direct()
        self._poller.register(self._wakeup.fd, zmq.POLLIN)
        self._replication.start(self._context, self._poller, self._cluster_keys,
                                has_room=self.disk_reserve.has_room)
        if self._remote_reader is not None:
            self._remote_reader.start()
        if self._tier is not None:
            self._tier.start()
        self._thread = threading.Thread(target=self._run, name=f"{self.shard_id}-loop", daemon=True)
        self._thread.start()
        return self.address

    def recovered(self) -> None:
        """The partitions of the shard's manifest are open and the partition counts set:
        group requests are served from now on. Loop thread (the actor, through call())."""
        if self._recovering:
            self._recovering = False
            log.info("%s recovered %d partitions: serving group requests (each log that "
                     "cut something or found damage is logged on its own; the clean ones at "
                     "DEBUG)", self.shard_id, len(self._partitions))

    def _recovering_error(self) -> UnavailableError:
        return UnavailableError(
            f"{self.shard_id} is recovering after a restart: it has reopened "
            f"{len(self._partitions)} of its partitions so far and serves groups once all "
            f"are open; retry")

    def _finish_deletions(self) -> None:
        """Recovery: remove the partition directories a crash left half-deleted (before
        any partition opens), and say which. Actor thread, under the data dir's lock."""
        removed = remove_deleted_directories(self.data_dir)
        if removed:
            log.warning("%s: removed %d partition directories a crash left half-deleted: %s",
                        self.shard_id, len(removed), ", ".join(removed))

    def _find_stranded_deletions(self) -> None:
        """Note (and log) the deletions of deleted tiered topics' remote segments that
        this shard cannot run with its --tier-url, or without one (remote_log_manager.py,
        "Topic deletion"); its stats carry them for the controller, which refuses the
        start. Actor thread, in start."""
        self.stranded_deletions = stranded_deletions(self.data_dir, self.tier.store)
        for store, found in self.stranded_deletions.get("stores", {}).items():
            log.error("%s: %d deletion(s) of deleted topics' remote segments (%s) wait in %s "
                      "for %s, but this shard has %s", self.shard_id, found["count"],
                      ", ".join(found["partitions"]), self.stranded_deletions["directory"],
                      store or "the store they were uploaded to (not recorded)",
                      f"--tier-url {self.tier.store}" if self.tier.enabled else "no --tier-url")

    def _bind(self) -> str:
        keys = self._cluster_keys
        if keys is not None and keys.ipc_dir is not None:
            # The 0700 directory admits only its owner's processes; a socket left by
            # a dead predecessor is replaced (this shard holds the shard dir's lock).
            address = f"ipc://{keys.ipc_dir}/{self.shard_id}"
            self._socket.bind(address)
            return address
        if keys is not None:
            self._authenticator = ClusterAuthenticator(self._context, keys, self.shard_id)
            self._authenticator.start()   # before bind: no peer is ever let in unchecked
            keys.apply_server(self._socket)
        port = self._socket.bind_to_random_port(f"tcp://{self.bind_host}")
        return f"tcp://{self.bind_host}:{port}"

    def _bind_direct(self) -> None:
        """The direct socket, with the router's front-socket bounds (actor thread, in
        start). Loopback only: it has no authentication of its own."""
        direct = self._direct = self._context.socket(zmq.ROUTER)
        direct.setsockopt(zmq.MAXMSGSIZE, limits.FRAME_BYTES_MAX)
        direct.setsockopt(zmq.RCVHWM, limits.SOCKET_MESSAGES_HWM)
        direct.setsockopt(zmq.SNDHWM, limits.SOCKET_MESSAGES_HWM)
        direct.setsockopt(zmq.LINGER, 0)
        keys = self._cluster_keys
        if keys is not None and keys.ipc_dir is not None:
            self.direct_address = self._bind_direct_ipc(direct, keys.ipc_dir)
        else:
            # A client whose replies make no progress this long is disconnected.
            direct.setsockopt(zmq.TCP_MAXRT, limits.CLIENT_REPLIES_STALLED_MS_MAX)
            port = direct.bind_to_random_port("tcp://127.0.0.1")
            self.direct_address = f"tcp://127.0.0.1:{port}"
        self._poller.register(direct, zmq.POLLIN)

    def _bind_direct_ipc(self, direct: zmq.Socket, ipc_dir: str) -> str:
        """The direct socket as ``ipc://<ipc dir>/<shard id>.direct`` (actor thread, in
        start), beside the router's hop socket in the same 0700 directory: only the
        data dir owner's processes can open it, which is who could read the logs
        anyway. A round trip over a Unix socket skips the loopback TCP stack (README,
        Performance: "Direct clients over ipc://"). A client that cannot open it (another
        user, another mount namespace) never connects, so its sends fail at once
        (ZMQ_IMMEDIATE) and go through the router. TCP_MAXRT has no Unix-socket
        counterpart. A client process that freezes whole (its ZeroMQ thread too) is
        disconnected by ZMTP heartbeats; one that lives but never reads keeps
        pinging, so what it can make the shard hold is bounded by its share of
        unsent replies (plinth/unsent_replies.py) instead."""
        direct.setsockopt(zmq.HEARTBEAT_IVL, limits.DIRECT_IPC_HEARTBEAT_IVL_MS)
        direct.setsockopt(zmq.HEARTBEAT_TIMEOUT, limits.CLIENT_REPLIES_STALLED_MS_MAX)
        address = f"ipc://{ipc_dir}/{self.shard_id}{DIRECT_IPC_SUFFIX}"
        direct.bind(address)
        return address

    def stop(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        """Flush and close every log, then stop the loop (actor thread)."""
        if self._thread is None:
            return
        if self._tier is not None:   # first: it posts its results to the loop
            self._tier.stop(grace_period_s)
        try:
            self.call(self._close_all_on_loop, timeout_s=grace_period_s)
        finally:
            self._stopping = True
            self._wakeup.wake()
            self._thread.join(grace_period_s)
            loop_ended = not self._thread.is_alive()
            self._thread = None
            self._group_commit.close()
            self._replication.stop_thread()
            if self._remote_reader is not None:
                self._remote_reader.stop(grace_period_s)
            self._socket.close(linger=0)
            if self._direct is not None:
                self._direct.close(linger=0)
            if self._authenticator is not None:
                self._authenticator.stop()
            if loop_ended:   # term() would wait for good on a socket still in use
                self._context.term()
            self._wakeup.close()
            self._lock_file.close()

    def call(self, fn, *args, timeout_s: float = limits.CONTROL_CALL_TIMEOUT_S):
        """Run ``fn(*args)`` on the loop thread and return its result (any other thread)."""
        if threading.current_thread() is self._thread:
            raise AssertionError(f"{self.shard_id}: call({getattr(fn, '__name__', fn)}) from "
                                 f"the loop thread would wait for itself")
        return self._queue(fn, args, timeout_s).result(timeout=timeout_s)

    def _queue(self, fn, args: tuple, timeout_s: float) -> concurrent.futures.Future:
        """Queue ``fn(*args)`` for the loop thread and wake it; the future has its outcome."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fn, args, future), timeout=timeout_s)
        self._wakeup.wake()
        return future

    def _lock_data_dir(self) -> None:
        # A shard restarted while its previous process is still dying must not
        # write the same logs; the kernel drops the lock when a process dies.
        self._lock_file = open(self.data_dir / ".lock", "a+")
        wait_s_max = limits.DATA_DIR_LOCK_WAIT_S_MAX
        deadline_s = time.monotonic() + wait_s_max
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline_s:
                    raise StorageError(
                        f"{self.data_dir} is locked by another shard process "
                        f"after waiting {wait_s_max} s") from None
                time.sleep(limits.DATA_DIR_LOCK_POLL_MS / 1000)

    def _close_all_on_loop(self) -> None:
        self._group_commit.commit(force_flush=True)
        self._replication.close()
        for part in self._partitions.values():
            part.log.close()
        self._partitions.clear()
        self._groups.close()

    # --- Partitions (loop thread, through call()) ----------------------------

    def open_partition(self, topic: str, partition: int, log_config, initial_offset: int = 0,
                       sealed: bool = False, producers: list | None = None,
                       leadership: Leadership | None = None,
                       min_insync_replicas: int | None = None,
                       restarted: bool = False, topic_id: str = "",
                       from_manifest: bool = False) -> str:
        """Open (recovering) or create one partition's log; returns how it was found
        (Partition.open_state: created empty, recovered whole, needs repair). Loop thread.

        A partition that takes writes here continues at ``initial_offset`` (where
        its previous owner sealed it; the log has a gap if it lived here before),
        with ``producers``, the previous owner's idempotence snapshot. ``sealed``
        opens it read-only (its writes moved to another shard). ``leadership``:
        its replicas and leader (None: one copy, here), applied as
        ``set_leadership`` does; ``min_insync_replicas``: the topic's
        min.insync.replicas (None: 2 with 3 replicas or more, else 1).
        ``restarted``: reopened after this shard restarted (from its manifest, or
        by the controller for a shard that lost it): it does not lead again in the
        epoch it led (it lost unsynced entries its followers may hold), and a
        replicated partition whose directory is gone (a lost disk) needs repair.
        It applies only to a partition not open yet: one open here is serving. One
        open already takes ``log_config`` (a change of the topic's config this shard
        missed: the controller saves a change before every shard applied it).
        ``topic_id``: the topic's id (PartitionSpec.topic_id; "" unknown), which
        names its remote segments: an open partition that had none takes it; one open
        under another id is settled by ``_settle_topic_id`` (its log is never deleted
        for it). ``from_manifest``: ``topic_id`` is the shard's manifest's (the actor
        reopening it at its start), not the controller's.
        """
        self._deleted.forget((topic, partition))   # (its topic created again)
        part = self._partitions.get((topic, partition))
        set_aside_now = False
        if part is not None and topic_id:
            part = self._settle_topic_id(part, topic_id)
            set_aside_now = part is None
        just_opened = part is None
        if part is None:
            if topic_id:
                topic_id = self._check_directory_owner(topic, partition, topic_id, restarted,
                                                       from_manifest)
            part = Partition.open(self._partition_dir(topic, partition), topic, partition,
                                  log_config, initial_offset, self._segment_files,
                                  one_copy=not self._replication.replicated(
                                      (topic, partition), leadership))
            if self._tier is not None:
                # Before it serves a fetch: a reader below the local start (or asking
                # for the earliest offset) must not be told the local start.
                part.remote = RemoteLogView.of(finished_segments_in_journal(part.log.directory))
            self._partitions[part.key] = part
        elif part.log.config != log_config:   # the controller's config is the topic's now
            self.set_log_config(topic, partition, log_config)
        part.set_topic_id(topic_id)
        if sealed:
            self._seal(part)
        else:
            part.take_writes(initial_offset, producers)
            if leadership is not None:   # its current range starts there (moved to this set)
                part.start_epochs_at(initial_offset)
        # One copy set aside just now lost nothing (its records are kept aside, said so):
        # not a restart that found its directory missing. A replicated one is, and
        # needs repair: an empty replica must not lead in an epoch its old log had.
        self._replication.opened(part, leadership, min_insync_replicas,
                                 restarted and just_opened and not (set_aside_now and
                                                                    leadership is None))
        if topic == topics.OFFSETS_TOPIC:
            self._groups.sync_slots()
        state = part.open_state()
        if not from_manifest:   # the controller's open: it has heard of a loss now
            part.lost_at_restart = False
            if self._tier is not None:   # its role is the controller's: list the store now
                self._tier.opened(part)
        return state

    def _check_directory_owner(self, topic: str, partition: int, topic_id: str,
                               restarted: bool, from_manifest: bool) -> str:
        """Before a partition opens: a create sets aside a directory holding records
        that may not be this topic id's (a deleted topic's, whose removal a crash cut
        short after its manifest forgot it); a reopen keeps its log whatever its
        partition.metadata says. Returns the id it opens under: "" (none yet) if
        the manifest's id and the file's disagree, since either may be the damaged
        one (``_settle_topic_id`` decides when the controller's id comes); a file
        that names another id than the controller is damage, logged, and written
        again (partition_metadata.py). Loop thread."""
        path = self._partition_dir(topic, partition)
        if restarted:   # (no file: a log from before it, written now; a bad one is logged)
            held = load_topic_id(path)
            if held is None or held == topic_id:
                return topic_id
            if from_manifest:
                self._disputed_ids[(topic, partition)] = (topic_id, held)
                log.error("%s: %s: its partition.metadata names topic id %s, the shard's "
                          "manifest %s: one of them is damaged. Its log is kept; the "
                          "controller's id for topic %s says which when it opens the "
                          "partition (until then it has no topic id: no upload to object "
                          "storage)", self.shard_id, path, held, topic_id, topic)
                return ""
            log.error("%s: %s: its partition.metadata names topic id %s, but it reopens "
                      "as topic %s's (id %s, as the shard's manifest or the controller "
                      "says): damage; its log is kept and the file written again",
                      self.shard_id, path, held, topic, topic_id)
            return topic_id
        why = foreign_log(path, topic_id)
        if not why:
            return topic_id
        aside = set_aside(path)
        log.warning("%s: %s holds records that may not be topic %s's (id %s): %s. Set "
                    "aside as %s (remove it once it is not needed); the partition is "
                    "created empty", self.shard_id, path, topic, topic_id, why, aside)
        return topic_id

    def _settle_topic_id(self, part: Partition, topic_id: str) -> Partition | None:
        """The controller opens ``part``, open here, as topic id ``topic_id``'s: returns
        it if its log is that topic's, else None, having set it aside
        (``_set_stray_aside``). A partition reopened from a manifest whose id its
        partition.metadata disputes is the topic's if either names ``topic_id``: the
        other file was damaged (logged; the file is written again, and the actor
        writes the manifest's entry again with the controller's spec). Loop thread."""
        disputed = self._disputed_ids.pop(part.key, None)
        if disputed is not None:
            manifest_id, file_id = disputed
            if topic_id == file_id:
                log.error("%s: %s: the shard's manifest names topic id %s, but the "
                          "controller and its partition.metadata say %s: the manifest was "
                          "damaged. Its log is kept and served as topic %s's, and the "
                          "manifest's entry written again", self.shard_id, part.name,
                          manifest_id, topic_id, part.topic)
                return part
            if topic_id == manifest_id:
                log.error("%s: %s: its partition.metadata names topic id %s, but the "
                          "controller and the shard's manifest say %s: the file was "
                          "damaged. Its log is kept and the file written again",
                          self.shard_id, part.name, file_id, topic_id)
                return part
            self._set_stray_aside(part, f"{manifest_id} (its partition.metadata: {file_id})",
                                  topic_id)
            return None
        if part.topic_id and part.topic_id != topic_id:
            self._set_stray_aside(part, part.topic_id, topic_id)
            return None
        return part

    def _set_stray_aside(self, part: Partition, held: str, topic_id: str) -> None:
        """Close ``part``, which holds topic id ``held``'s log while the controller says
        the topic has id ``topic_id``, and set its directory aside (``-orphan``), whole,
        before the topic's partition opens empty. Either the topic was deleted and
        created again while this shard was down (the deletion never reached it) or a
        file says a wrong id (a flipped bit in metadata.json looks the same): no one
        can tell, so nothing is deleted. Its remote segments (named by ``held``) are
        kept too. Loop thread."""
        path, size_bytes = part.log.directory, part.log.size_bytes
        self._close_partition(part, UnknownTopicError(
            f"{part.name} of topic id {held} was set aside: the topic has id {topic_id}"))
        aside = set_aside(path)
        log.warning("%s: %s holds topic id %s's log, but the controller says topic %s has "
                    "id %s (the topic was deleted and created again while this shard was "
                    "down, or a file's id is damaged: plinth check says which files "
                    "disagree). Set aside as %s, whole (%d bytes): remove it once it is "
                    "not needed%s; the partition opens empty", self.shard_id, part.name,
                    held, part.topic, topic_id, aside, size_bytes, self._remote_kept(part))

    def _remote_kept(self, part: Partition) -> str:
        """What the set-aside warning says of ``part``'s remote segments, which stay."""
        if self._tier is None:
            return ""
        if not part.topic_id:
            return "; any remote segments of those ids in object storage are kept too"
        return (f"; its {len(part.remote.segments)} remote segments in object storage are "
                f"kept too (under {partition_prefix(part.topic, part.topic_id, part.partition)}"
                f"; remove them with it)")

    def _close_partition(self, part: Partition, error: BrokerError) -> None:
        """Stop serving ``part`` (parked fetches get ``error``) and close its log, whose
        files stay; its remote segments stay too. Loop thread."""
        del self._partitions[part.key]
        self._purgatory.fail(part.key, error)
        if self._tier is not None:
            self._tier.forget(part, part.log.directory, keep_remote=True)
        if self._remote_reader is not None and part.topic_id:
            self._remote_reader.drop_partition(part.name, part.topic_id, part.partition,
                                               "set aside")
        self._replication.forget(part, error)
        self._group_commit.forget(part, error)
        self.stats.forget(part.key)
        part.log.close()
        if part.topic == topics.OFFSETS_TOPIC:
            self._groups.sync_slots()

    def set_min_insync(self, topic: str, partition: int, min_insync_replicas: int) -> None:
        """A topic's altered min.insync.replicas, for one partition. Loop thread."""
        self._replication.set_min_insync((topic, partition), min_insync_replicas)

    def seal_partition(self, topic: str, partition: int) -> tuple[int, list]:
        """Stop taking writes for a partition of one copy that moves away; returns its end
        offset, where its new owner starts, and its producers' idempotence snapshot
        (``seal_range`` for a replicated one). Loop thread."""
        end_offset, producers, _ = self.seal_range(topic, partition)
        return end_offset, producers

    def seal_range(self, topic: str, partition: int,
                   end_offset: int | None = None) -> tuple[int, list, bool]:
        """Stop taking writes for a partition that moves away; returns its end offset,
        where its new owner starts, its producers' idempotence snapshot, and whether
        that is final (complete). Loop thread.

        Its writer (``end_offset`` None) refuses writes from now on. Of a replicated
        partition it leads, the end is the high watermark, final only once it reaches
        the log's end (every in-sync replica holds every record): until then it keeps
        serving its followers, and the controller asks again; then it stops leading.
        A replica that does not lead (``end_offset``: where the leader sealed it)
        stops following it; complete if its log ends exactly there, and then it
        serves reads up to it.
        """
        part = self._require(topic, partition)
        # Everything appended is made durable and acknowledged first.
        self._group_commit.commit(force_flush=True)
        moved = UnavailableError(f"{part.name} moved away from {self.shard_id}; retry")
        if end_offset is None:
            self._seal(part)
            complete = part.high_watermark >= part.log.end_offset
            if complete:
                self._replication.seal(part, moved)
            return part.high_watermark, part.producers.snapshot(), complete
        self._replication.seal(part, moved)
        if part.log.end_offset != end_offset:
            return part.log.end_offset, [], False
        part.high_watermark = end_offset   # a follower's may lag the leader's last word
        self._seal(part)
        return end_offset, part.producers.snapshot(), True

    def hand_over(self, topic: str, partition: int, to_shard: str) -> tuple[bool, int]:
        """Hand a partition led here over to its in-sync follower ``to_shard`` (a
        preferred-leader election): produces are refused from now on, everything
        appended is made durable, and the answer says whether ``to_shard`` holds it
        all, with the log end offset; the controller asks again until it does, then
        makes ``to_shard`` the leader (shard_replication.py, "Hand-overs"). Loop
        thread."""
        part = self._require(topic, partition)
        if part.sealed:
            raise UnavailableError(f"{part.name} moved away from {self.shard_id}; retry")
        self._replication.hand_over(part, to_shard, time.monotonic())   # refuses from now on
        self._group_commit.commit(force_flush=True)
        return self._replication.holds_log_end(part, to_shard), part.log.end_offset

    def end_hand_over(self, topic: str, partition: int) -> None:
        """The controller gave up handing a partition over: it takes writes again. Loop
        thread."""
        part = self._partitions.get((topic, partition))
        if part is not None:
            self._replication.end_hand_over(part)

    def _seal(self, part: Partition) -> None:
        part.sealed = True
        if part.log.config.remote_storage_enable:
            part.roll_sealed()   # its last segment is uploaded too (it never fills up)
        self._purgatory.wake(part.key)   # their next fetch goes to the new owner

    def delete_partition(self, topic: str, partition: int, keep_remote: bool = False) -> bool:
        """Close and delete one partition's log; parked fetches get an error. Loop thread.
        With tiered storage its remote objects go too, unless ``keep_remote``: only
        this copy goes (a pruned range, a replica moved away), not the partition;
        without it the topic is gone, and requests for the partition are answered so
        for a while (``_require``, shards/deleted_partitions.py)."""
        part = self._partitions.pop((topic, partition), None)
        self._disputed_ids.pop((topic, partition), None)
        path = self._partition_dir(topic, partition)
        if part is not None:
            deleted = UnknownTopicError(f"topic {topic!r} was deleted")
            self._purgatory.fail(part.key, deleted)
            if not keep_remote:
                self._deleted.deleted(part.key, part.topic_id)
            if self._tier is not None:   # before the directory (and its journal) goes
                self._tier.forget(part, path, keep_remote)
            if self._remote_reader is not None and part.topic_id:   # its cached remote chunks
                self._remote_reader.drop_partition(part.name, part.topic_id, part.partition,
                                                   "moved away" if keep_remote else "deleted")
            self._replication.forget(part, deleted)
            self._group_commit.forget(part, deleted)
            self.stats.forget(part.key)
            part.log.delete()
            if topic == topics.OFFSETS_TOPIC:
                self._groups.sync_slots()
        elif path.exists():
            if self._tier is not None and not keep_remote:
                self._tier.forget(None, path)
            delete_directory(path)
        return part is not None

    def partition_info(self, topic: str, partition: int,
                       found: time_lookup.TimeLookup = time_lookup.NOT_FOUND
                       ) -> protocol.PartitionInfo:
        """A partition's offsets and sizes, local and remote (from the remote log view
        the loop holds: Partition.remote), with ``found``, the answer of a look-up by
        time (``_partition_info_then``). Loop thread. A tiered partition whose view
        is not the store's yet (a new leader that has not listed it, the store down)
        says so (``remote_not_listed``): its remote fields may lack segments."""
        part = self._require(topic, partition)
        remote = part.remote
        not_listed = ("" if self._tier is None or not part.log.config.remote_storage_enable
                      else self._tier.not_listed(part))
        return protocol.PartitionInfo(
            partition=partition, shard=self.shard_id, start_offset=part.log_start_offset,
            end_offset=part.high_watermark, high_watermark=part.high_watermark,
            size_bytes=part.log.size_bytes,
            local_start_offset=part.local_start_offset, remote_bytes=remote.remote_bytes,
            remote_start_offset=protocol.NO_REMOTE_OFFSET if remote.is_empty
            else remote.log_start_offset,
            remote_end_offset=protocol.NO_REMOTE_OFFSET if remote.is_empty else remote.end_offset,
            found_offset=found.offset, found_timestamp_ms=found.timestamp_ms,
            remote_not_listed=not_listed)

    def partition_info_at_time(self, topic: str, partition: int,
                               timestamp_ms: int) -> concurrent.futures.Future:
        """``_partition_info_then`` for a caller on another thread (the actor's
        partition_infos, through call()): the future gets the PartitionInfo or the
        BrokerError, at once or once the remote reader found the record. Loop thread."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def answer(info: protocol.PartitionInfo | BrokerError) -> None:
            if isinstance(info, BrokerError):
                future.set_exception(info)
            else:
                future.set_result(info)

        # Received now: no request came with it (self._received_s is another's).
        self._partition_info_then(topic, partition, timestamp_ms, answer, time.monotonic())
        return future

    def _list_offsets(self, envelope: list, request: protocol.ListOffsetsRequest) -> None:
        """listOffsets: answered at once, or (a time whose record is in object storage)
        once the remote reader found it. With ``require_listed`` (a reset to the earliest
        offset) unavailable while a tiered partition's remote view may lack segments
        the store holds below the start it knows: its log start may be lower. A
        start known to be the floor (0, or where deleteRecords raised it: the local
        log's, or its journal's remote segments') is exact whatever the store holds;
        a stale view's start too low only costs a read that fails. Loop thread."""
        if request.require_listed:
            part = self._require(request.topic, request.partition)
            if part.log_start_offset > part.floor:
                self._require_listed(part, f"records before the log start offset "
                                           f"{part.log_start_offset} may be in object storage")

        def answer(info: protocol.PartitionInfo | BrokerError) -> None:
            if isinstance(info, BrokerError):
                self.stats.error(info.code_name)
                self._reply(envelope, protocol.encode_error(request.request_id, info))
            else:
                self._reply(envelope, protocol.encode_offsets_reply(request.request_id, info))

        self._partition_info_then(request.topic, request.partition, request.timestamp_ms, answer,
                                  self._received_s)

    def _partition_info_then(self, topic: str, partition: int, timestamp_ms: int,
                             answer: Callable[[protocol.PartitionInfo | BrokerError], None],
                             received_s: float, from_offset: int = 0) -> None:
        """``answer(partition_info)`` with, if ``timestamp_ms`` is not NO_TIME_LOOKUP
        (>= 0 or MAX_TIMESTAMP), the first record at or after ``from_offset`` stamped
        at or after it (time_lookup.py): now if the local log or no record holds it,
        else once the remote reader has read it from object storage
        (tier/remote_time_lookup.py), or with that read's error, or requestTimedOut
        if the read is not back within REMOTE_TIME_LOOKUP_WAIT_MS_MAX of
        ``received_s`` (when the loop got the request, time.monotonic()). Errors
        found before anything is queued are raised. Loop thread (``answer`` is
        called on it)."""
        part = self._require(topic, partition)
        if timestamp_ms == protocol.NO_TIME_LOOKUP:
            answer(self.partition_info(topic, partition))
            return
        self._require_listed(part, f"the first record at {timestamp_ms} ms may be in object "
                                   f"storage")
        found = time_lookup.record_at_time(part, timestamp_ms, from_offset)
        if isinstance(found, time_lookup.InRemoteSegment):
            self._find_time_remotely(part, found, answer, received_s)
        else:
            answer(self.partition_info(topic, partition, found))

    def _find_time_remotely(self, part: Partition, where: time_lookup.InRemoteSegment,
                            answer: Callable[[protocol.PartitionInfo | BrokerError], None],
                            received_s: float) -> None:
        """Queue the look-up of ``where`` for the remote reader, or have it join the read
        of the same segment, time and floor already pending (a client's retry); the
        read's result comes back through ``_remote_fetched`` to ``found``, below, or
        ``_answer_time_wait_ended`` answers it requestTimedOut once it has waited
        REMOTE_TIME_LOOKUP_WAIT_MS_MAX (tier/remote_fetch_waits.py). Loop thread."""
        if self._remote_reader is None:
            raise StorageError(f"{part.name}: the record at {where.timestamp_ms} ms is in "
                               f"{where.segment.describe()}, and {self.shard_id} has no "
                               f"--tier-url to read it from")

        def found(record: time_lookup.TimeLookup | None, error: BrokerError | None) -> None:
            try:
                if error is not None:
                    raise error
                if record is None:   # none at or after the floor in it: the next one has,
                    # within what is left of the same wait
                    self._partition_info_then(part.topic, part.partition, where.timestamp_ms,
                                              answer, received_s, where.segment.end_offset)
                else:
                    answer(self.partition_info(part.topic, part.partition, record))
            except BrokerError as exc:
                answer(exc)

        lookup = RemoteTimeRead(part.key, where.segment, where.timestamp_ms, where.from_offset,
                                received_s, found)
        self._queue_remote(lookup, self._time_waits)

    def _queue_remote(self, read: RemoteRead | RemoteTimeRead, waits: RemoteFetchWaits) -> None:
        """Have ``read`` (a fetch or a look-up by time) join the read of the same thing
        pending in ``waits``, else submit it to the reader and wait in ``waits``. A full
        reader queue raises TooManyRequestsError (counted). Loop thread."""
        now_s = time.monotonic()
        if waits.join(read, now_s):
            return   # the client's retry of a read still under way: no second read queued
        try:
            self._remote_reader.submit(read)
        except BrokerError:
            self.stats.remote.errors += 1
            raise
        waits.add(read, now_s)

    def _delete_records(self, envelope: list, request: protocol.DeleteRecordsRequest) -> None:
        """Kafka's DeleteRecords for a partition led here (or of one copy): no record
        below ``request.offset`` (-1: the high watermark) is served from now on, saved
        before anything is answered (Partition.delete_records). Answered with its
        offsets, start_offset the new low watermark: at once for a partition of one
        copy, else once every in-sync follower holds the new start too
        (deletion_waits.py; requestTimedOut after DELETE_RECORDS_WAIT_MS_MAX).
        NotLeaderError where it is not led, UnavailableError once its writes moved
        away. Loop thread."""
        part = self._require(request.topic, request.partition)
        role = self._roles.get(part.key)   # None: one copy, here
        if role is not None and type(role) is not Led:
            raise NotLeaderError(f"{part.name}: {self.shard_id} does not lead it; retry at "
                                 f"its leader")
        if part.sealed:
            raise UnavailableError(f"{part.name} moved away from {self.shard_id}; retry (the "
                                   f"routers are learning its new shard)")
        before = part.log_start_offset
        part.delete_records(request.offset)
        if part.log_start_offset != before:
            log.info("%s: records of %s before offset %d deleted (log start offset was %d)",
                     self.shard_id, part.name, part.log_start_offset, before)

        def answer(error: BrokerError | None) -> None:
            if error is None:
                try:   # (the partition may have been deleted while its followers caught up)
                    info = self.partition_info(request.topic, request.partition)
                    self._reply(envelope, protocol.encode_offsets_reply(request.request_id, info))
                    return
                except BrokerError as exc:
                    error = exc
            self.stats.error(error.code_name)
            self._reply(envelope, protocol.encode_error(request.request_id, error))

        if role is None:
            answer(None)
        else:
            self._replication.floor_raised(part, answer, time.monotonic())

    def set_log_config(self, topic: str, partition: int, log_config) -> None:
        """A topic's altered config (retention, rolling) for one partition. Loop thread.
        A sealed partition whose topic became tiered rolls its last segment, as a
        seal does (``_seal``): active segments are never uploaded."""
        part = self._require(topic, partition)
        part.log.config = log_config
        if part.sealed and log_config.remote_storage_enable:
            part.roll_sealed()

    def tiered_sealed(self, pids: list[PartitionId]) -> list[TieredState]:
        """For each partition, whether its copy sealed here is wholly in object storage
        (RemoteLogManager.wholly_remote), with its log start and end offsets; a
        partition not held here is not (offsets 0), and without --tier-url none
        is. Loop thread."""
        states = []
        for pid in pids:
            part = self._partitions.get((pid.topic, pid.partition))
            if part is None:
                states.append(TieredState(pid, False, 0, 0))
                continue
            wholly = self._tier is not None and self._tier.wholly_remote(part)
            states.append(TieredState(pid, wholly, part.log_start_offset, part.log.end_offset))
        return states

    def covers_remote(self, topic: str, partition: int, intervals: list[tuple[int, int]],
                      resync: bool) -> list[bool]:
        """For each [start, end) of ``intervals``, whether the partition's remote view
        (``Partition.remote``, no store call) holds every offset of it. With
        ``resync``, one not covered makes the uploader list the store again
        (RemoteLogManager.request_resync: a range another shard uploaded since);
        ask again later. Once a listing made after the latest request is in the view,
        offsets below the partition's log start count as covered: total retention
        deleted them (this shard's retention counts the whole partition, the draining
        shard's only its own range, so its log start lags). A partition not held
        here, or a shard without --tier-url, covers nothing. Loop thread."""
        part = self._partitions.get((topic, partition))
        if part is None or self._tier is None:
            return [False] * len(intervals)
        gone_end = part.log_start_offset if self._tier.listed_since_request(part) else 0
        covered = [max(start, gone_end) >= end or part.remote.covers(max(start, gone_end), end)
                   for start, end in intervals]
        if resync and not all(covered):
            self._tier.request_resync(part)
        return covered

    def _enforce_retention(self) -> None:
        """Every partition's retention at once (the tests' way to force a sweep)."""
        for part in list(self._partitions.values()):
            self._enforce_retention_of(part)

    def _enforce_retention_slice(self, now_s: float) -> None:
        """The retention of the next RETENTION_SWEEP_SLICE_PARTITIONS partitions of the
        sweep that starts every RETENTION_CHECK_INTERVAL_S (loop thread). A slice per
        loop pass, requests served between them: a whole sweep of 10,000 partitions
        held the loop, and every request waiting on it, for 25 ms every 5 s."""
        if not self._retention_sweep:
            self._retention_sweep = list(self._partitions)
            self._next_retention_s = now_s + limits.RETENTION_CHECK_INTERVAL_S
        keys = self._retention_sweep[-limits.RETENTION_SWEEP_SLICE_PARTITIONS:]
        del self._retention_sweep[-limits.RETENTION_SWEEP_SLICE_PARTITIONS:]
        for key in keys:
            part = self._partitions.get(key)
            if part is not None:   # else deleted since the sweep began
                self._enforce_retention_of(part)

    def _enforce_retention_of(self, part: Partition) -> None:
        try:
            if self._tier is not None and self._tier.uploads(part):
                self._tier.enforce_local_retention(part)   # only what is uploaded
            else:
                part.enforce_retention()   # the log, then its leader epochs
                if self._tier is not None:   # a follower's: what the store holds
                    self._tier.enforce_follower_retention(part)
        except OSError as exc:
            log.error("%s: retention of %s failed: %s", self.shard_id, part.name, exc)

    def _partition_dir(self, topic: str, partition: int) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    def _require(self, topic: str, partition: int) -> Partition:
        part = self._partitions.get((topic, partition))
        if part is None and self._recovering:   # (it may be one still to reopen)
            raise self._recovering_error()
        if part is None:
            # The router's map was stale. A topic deleted here: for good, so said, as
            # Kafka's unknownTopic (routers learn of it at their next refresh).
            deleted = self._deleted.error_for(topic, partition, self.shard_id)
            if deleted is not None:
                raise deleted
            # A shard restarted on a port another one had, a partition moved, a topic
            # deleted long ago (or before a restart): retriable.
            raise UnavailableError(f"partition {topic}-{partition} is not on {self.shard_id}; "
                                   f"retry (the routers are refreshing their map)")
        return part

    # --- Replication (loop thread, through call()) -----------------------------

    def set_peers(self, addresses: dict[str, str], controller_epoch: int) -> None:
        """Every running shard's address, for following leaders. Loop thread."""
        self._replication.set_peers(addresses, controller_epoch)

    def set_leadership(self, changes: list) -> None:
        """New leadership records (shard_calls.Leadership) of partitions here: lead,
        follow, or neither (shard_replication.py). Loop thread."""
        self._replication.set_leadership(changes)
        self._groups.sync_slots()   # a slot of the internal topic led, or no longer

    def _post(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the loop thread, without waiting for it (any other thread).
        Nobody reads its outcome, so a failure is logged rather than lost."""
        future = self._queue(fn, args, limits.CONTROL_CALL_TIMEOUT_S)
        future.add_done_callback(self._log_posted_failure)

    def _log_posted_failure(self, future: concurrent.futures.Future) -> None:
        if future.exception() is not None:
            log.error("%s: a posted command failed: %r", self.shard_id, future.exception())

    # --- Groups and stats (loop thread, through call()) ----------------------

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """Every topic's partition count, pushed by the controller. Loop thread. A
        deleted topic named again was created again: its partitions are served (here
        or elsewhere), not answered as deleted."""
        self._groups.set_partition_counts(counts)
        self._deleted.forget_topics(counts)

    def group_names(self) -> list[str]:
        """The groups this shard coordinates. Loop thread."""
        return self._groups.names()

    def group_listings(self) -> list[protocol.GroupListing]:
        """The groups this shard coordinates, each with its state (listGroups). Loop
        thread."""
        return self._groups.listings()

    def group_names_page(self, prefix: str, after: str, limit: int) -> NamesPage:
        """A page of the groups this shard coordinates (plinth/name_pages.py). Loop thread."""
        return page_of(self._groups.names(), prefix, after, limit)

    def partition_stats(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], tuple]:
        """(size in bytes, records/s in, bytes/s in, records/s out, bytes/s out) of each
        partition of ``keys`` held here, from the log's size and the stats' counters in
        memory; a partition not held here is left out. Loop thread."""
        out = {}
        for key in keys:
            part = self._partitions.get(key)
            if part is not None:
                out[key] = (part.log.size_bytes, *self.stats.partition_rates(key))
        return out

    def hand_over_groups(self, names: list[str]) -> dict[str, dict]:
        """Stop coordinating these groups; returns each one's state. Loop thread."""
        return self._groups.hand_over(names)

    def adopt_groups(self, states: dict[str, dict]) -> None:
        """Coordinate groups handed over by another shard. Loop thread."""
        self._groups.adopt(states)

    def _slot_led(self, index: int) -> tuple[Partition, int] | None:
        """(partition, leader epoch) if this shard leads slot ``index`` of the internal
        topic now. Loop thread."""
        key = (topics.OFFSETS_TOPIC, index)
        role, part = self._roles.get(key), self._partitions.get(key)
        if type(role) is not Led or part is None:   # (None: closed, the shard is stopping)
            return None
        return part, role.leader_epoch

    def _slot_append(self, part: Partition, batch: bytes, record_count: int, now_ms: int) -> int:
        """Append a batch of group records to a slot led here, replicated like a produce
        (group commit fsyncs it; its followers fetch it). Loop thread."""
        led = self._roles.get(part.key)
        if type(led) is not Led:
            raise NotLeaderError(f"{part.name}: {self.shard_id} no longer leads it; retry")
        base_offset = part.append(batch, summarize_batch(batch), now_ms,
                                  leader_epoch=led.leader_epoch)
        self.disk_reserve.appended(len(batch))   # into the reserve: commits are not refused
        self._group_commit.written(part)
        return base_offset

    def _slot_check_acks_all(self, part: Partition) -> None:
        """NotEnoughReplicasError if a slot's write could not be acknowledged now."""
        self._replication.check_produce(part, self._roles.get(part.key), -1)

    def stats_snapshot(self) -> dict:
        """Counters, rates, latency histograms, and per partition its offsets and size;
        its disk's free and total bytes and its reserve (disk_reserve.py), and how many
        partitions' last append the disk refused (``appends_failing``);
        plus every coordinated group's committed offsets, and the topic deletions it
        cannot run (STRANDED_DELETIONS_STAT, if any). Loop thread."""
        snapshot = self.stats.snapshot()
        snapshot["logs"] = {key: {"start_offset": p.log_start_offset,
                                  "local_start_offset": p.local_start_offset,
                                  "end_offset": p.high_watermark, "size_bytes": p.log.size_bytes}
                            for key, p in self._partitions.items()}
        snapshot["groups"] = self._groups.committed_offsets()
        snapshot["replication"] = self._replication.stats()
        snapshot["disk"] = self.disk_reserve.snapshot()
        snapshot["disk"]["partitions_appends_failing"] = sum(
            p.appends_failing for p in self._partitions.values())
        if self._tier is not None:
            snapshot["tier"] = self._tier.stats()
        if self.stranded_deletions:
            snapshot[STRANDED_DELETIONS_STAT] = self.stranded_deletions
        return snapshot

    # --- The loop ------------------------------------------------------------

    def _run(self) -> None:
        poller = self._poller
        while not self._stopping:
            events = dict(poller.poll(self._poll_timeout_ms()))
            if self._wakeup.fd in events:
                self._run_commands()
                del events[self._wakeup.fd]
            if self._socket in events:
                self._drain(self._socket, self._handle)
                del events[self._socket]
            if self._direct is not None and self._direct in events:
                self._drain(self._direct, self._handle_direct)
                del events[self._direct]
            for sock in events:   # the DEALERs to the leaders this shard follows
                self._replication.on_readable(sock)
            self._group_commit.commit()
            self._run_timers(time.monotonic())

    def _run_timers(self, now_s: float) -> None:
        self._purgatory.expire(now_s)
        for fetch in self._remote_waits.expire(now_s):
            self._answer_remote_wait_ended(fetch)
        for lookup in self._time_waits.expire(now_s):
            self._answer_time_wait_ended(lookup)
        self._groups.run_timers(now_s)
        self._replication.run_timers(now_s)
        if self._tier is not None:
            self._tier.run_timers(now_s)
        if now_s >= self._next_sample_s:
            self.stats.sample(now_s)
            self._next_sample_s = now_s + limits.SHARD_STATS_SAMPLE_INTERVAL_S
        if self._retention_sweep or now_s >= self._next_retention_s:
            self._enforce_retention_slice(now_s)

    def _poll_timeout_ms(self) -> int:
        now_s = time.monotonic()
        if self._retention_sweep:   # the next slice of a sweep: after what is waiting
            return 0
        deadline_s = now_s + limits.SHARD_IDLE_POLL_MS / 1000
        for wake_s in (self._purgatory.next_deadline_s(), self._group_commit.next_flush_s(),
                       self._groups.next_timer_s(), self._replication.next_timer_s(),
                       self._remote_waits.next_deadline_s(), self._time_waits.next_deadline_s()):
            if wake_s is not None and wake_s < deadline_s:
                deadline_s = wake_s
        return max(0, int((deadline_s - now_s) * 1000) + 1)

    def _run_commands(self) -> None:
        self._wakeup.drain()
        while True:
            try:
                fn, args, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to the caller, who re-raises
                future.set_exception(exc)

    @staticmethod
    def _drain(sock: zmq.Socket, handle) -> None:
        """Hand ``handle`` up to GROUP_COMMIT_REQUESTS_MAX messages waiting on ``sock``
        (which polled readable)."""
        frames = recv_frames(sock)
        if frames is None:
            return
        handle(frames)
        # One message per poll is the usual case at a low rate: asking whether
        # another waits is cheaper than a recv that fails (plinth/socket_frames.py);
        # after a second one, a burst is draining and one failed recv ends it.
        if not readable(sock):
            return
        for _ in range(limits.GROUP_COMMIT_REQUESTS_MAX - 1):
            frames = recv_frames(sock)
            if frames is None:
                return
            handle(frames)

    def _handle(self, frames: list) -> None:
        if len(frames) < 3:
            log.warning("%s: dropped a message of %d frames; a request has at least 3",
                        self.shard_id, len(frames))
            return
        self.stats.requests_via_router += 1
        self._serve(frames[:2], frames[2], frames[3:])

    def _handle_direct(self, frames: list) -> None:
        if len(frames) < 2:
            log.warning("%s: dropped a direct message of %d frame(s) with no header",
                        self.shard_id, len(frames))
            return
        self.stats.requests_direct += 1
        self._serve([_DIRECT_UNCOUNTED, frames[0]], frames[1], frames[2:], direct=True)

    def _serve(self, envelope: list, header, payload: list, direct: bool = False) -> None:
        """Decode one request and dispatch it; any error is its reply."""
        request_id = 0
        try:
            request = protocol.decode_request(header.buffer)
            request_id = request.request_id
            if direct:
                self._admit_direct(envelope, request, payload)
            self._dispatch(envelope, request, payload)
        except BrokerError as exc:
            self.stats.error(exc.code_name)
            self._reply(envelope, protocol.encode_error(request_id, exc))
        except AssertionError:   # an invariant broke: stop the loop rather than serve on
            raise
        except Exception as exc:
            log.exception("%s: internal error on request %d", self.shard_id, request_id)
            self._reply(envelope, protocol.encode_error(
                request_id, InternalError(f"{self.shard_id}: {type(exc).__name__}: {exc}")))

    def _admit_direct(self, envelope: list, request, payload: list) -> None:
        """Check a direct client's request as the router checks its clients' (kind,
        frame count, requests in flight); a counted one gets the counted marker
        (``envelope`` is changed in place). Raises the error to answer it with."""
        kind = type(request)
        if kind not in _DIRECT_KINDS:
            raise MalformedRequestError(
                f"the direct socket of {self.shard_id} takes produce and fetch requests, not "
                f"{request.kind}; send it to the router")
        protocol.check_payload_frames(request, payload)
        if kind is protocol.ProduceRequest and request.acks == 0:
            return   # no reply unless it fails: not counted
        client = envelope[1].bytes
        in_flight = self._direct_in_flight.get(client, 0)
        if in_flight >= limits.CLIENT_REQUESTS_IN_FLIGHT_MAX:
            raise TooManyRequestsError(
                f"client has {in_flight} requests in flight at {self.shard_id}'s direct "
                f"socket, the limit is {limits.CLIENT_REQUESTS_IN_FLIGHT_MAX}; wait for replies")
        self._direct_in_flight[client] = in_flight + 1
        envelope[0] = _DIRECT_COUNTED

    def _dispatch(self, envelope: list, request, payload: list) -> None:
        self._received_s = time.monotonic()
        kind = type(request)
        if kind is protocol.ProduceRequest:
            self._produce(envelope, request, payload)
        elif kind is protocol.FetchRequest:
            self._fetch(envelope, request)
        elif kind is protocol.ListOffsetsRequest:
            self._list_offsets(envelope, request)
        elif kind is protocol.DeleteRecordsRequest:
            self._delete_records(envelope, request)
        elif isinstance(request, protocol.GROUP_REQUESTS):
            if self._recovering:   # (raises, or a classic request's loading answer)
                header = self._groups.refuse_while_loading(request, self._recovering_error())
            else:
                header = self._groups.handle(request, payload, envelope)
            if header is not None:   # None: answered once its slot's high watermark passes
                self._reply(envelope, header)
                self.stats.observe("group", time.monotonic() - self._received_s)
        elif kind is protocol.ReplicaFetchRequest:
            self._replication.serve(envelope, request, self._received_s)
        elif kind is protocol.ReplicaFetchAllRequest:
            self._replication.serve_all(envelope, request, self._received_s)
        else:
            raise MalformedRequestError(
                f"{self.shard_id} serves produce, fetch, listOffsets, deleteRecords, "
                f"replicaFetch and group requests, not {request.kind}")

    def _reply(self, envelope: list, header: bytes, payload=None) -> None:
        marker = envelope[0]
        if marker is _DIRECT_COUNTED or marker is _DIRECT_UNCOUNTED:
            self._reply_direct(envelope, header, payload)
            return
        frames = [*envelope, header] if payload is None else [*envelope, header, payload]
        try:
            send_frames(self._socket, frames)
        except zmq.Again:
            log.warning("%s: reply dropped, the router is not reading", self.shard_id)

    def _reply_direct(self, envelope: list, header: bytes, payload) -> None:
        client = envelope[1]
        if envelope[0] is _DIRECT_COUNTED:
            client_id = client.bytes
            left = self._direct_in_flight.get(client_id, 1) - 1
            if left:
                self._direct_in_flight[client_id] = left
            else:   # no entry kept for a client with nothing in flight (it may be gone)
                self._direct_in_flight.pop(client_id, None)
        if payload is not None and len(payload) >= limits.REPLY_BYTES_TRACKED_MIN:
            self._reply_direct_tracked(client, header, payload)
            return
        frames = [client, header] if payload is None else [client, header, payload]
        try:
            send_frames(self._direct, frames)
        except zmq.Again:
            log.warning("%s: direct reply dropped, the client is not reading", self.shard_id)

    def _reply_direct_tracked(self, client: zmq.Frame, header: bytes, payload) -> None:
        """A large fetch reply to a direct client, tracked until it is written to the
        client's connection (plinth/unsent_replies.py); one that would take the client,
        or this socket, past its unsent-bytes budget becomes tooManyRequests."""
        try:
            refused = self._direct_unsent.send(self._direct, client.bytes, header, payload)
        except zmq.Again:
            log.warning("%s: direct reply dropped, the client is not reading", self.shard_id)
            return
        if refused is not None:
            request_id = protocol.decode_reply(header).request_id
            error = TooManyRequestsError(refused)
            self.stats.error(error.code_name)
            self._reply_direct([_DIRECT_UNCOUNTED, client],   # already counted off above
                               protocol.encode_error(request_id, error), None)

    # --- Produce ---------------------------------------------------------------

    def _produce(self, envelope: list, request: protocol.ProduceRequest, payload: list) -> None:
        if len(payload) != 1:
            raise MalformedRequestError(
                f"a produce request carries exactly 1 payload frame (the RecordBatch), "
                f"got {len(payload)}")
        if request.acks not in protocol.ACKS_VALUES:
            raise MalformedRequestError(f"acks={request.acks} is not one of -1, 0, 1")
        part = self._require(request.topic, request.partition)
        if part.sealed:
            raise UnavailableError(
                f"{part.name} moved away from {self.shard_id} at offset "
                f"{part.high_watermark}; retry (the routers are learning its new shard)")
        led = self._roles.get(part.key)   # None: one copy, here
        if led is not None:
            led = self._replication.check_produce(part, led, request.acks)
        batch = payload[0].buffer
        summary = batch_formats.summarize(request.batch_format, batch)
        now_ms = time.time_ns() // 1_000_000   # the shard's clock: timestamps, producer ids
        base_offset = part.producers.check(part.name, summary.producer_id, summary.base_sequence,
                                           summary.record_count, now_ms,
                                           producer_epoch=summary.producer_epoch)
        if base_offset is None:
            leader_epoch = NO_EPOCH if led is None else led.leader_epoch
            try:
                self.disk_reserve.check(len(batch))   # a retry stored already is answered above
                base_offset = part.append(batch, summary, now_ms, leader_epoch,
                                          request.batch_format)
            except StorageError as exc:   # a full disk: the controller may move the leader
                if led is not None:
                    self._replication.append_refused(part, exc, time.monotonic())
                raise
            self.disk_reserve.appended(len(batch))
            self.stats.produced(part.key, summary.record_count, len(batch))
            self._group_commit.written(part)
        if request.acks == -1 and led is not None:
            # acks="all": answered once the high watermark passes its last record.
            self._group_commit.acknowledge_later(envelope, request.request_id, part, base_offset,
                                                 self._received_s,
                                                 base_offset + summary.record_count - 1)
        elif request.acks != 0:
            self._group_commit.acknowledge_later(envelope, request.request_id, part, base_offset,
                                                 self._received_s)

    # --- Fetch -----------------------------------------------------------------

    def _fetch(self, envelope: list, request: protocol.FetchRequest) -> None:
        part = self._require(request.topic, request.partition)
        plog = part.log
        if envelope[0] is _DIRECT_COUNTED:
            self._check_direct_fetch(part)
        if part.sealed and request.offset >= plog.end_offset:
            # Past the move: the new owner has it. An empty answer makes the
            # consumer ask again, through a router that knows by then.
            self._reply(envelope, protocol.encode_fetch_reply(
                request.request_id, part.high_watermark, part.log_start_offset), b"")
            return
        start_offset = part.log_start_offset   # in object storage if the remote log reaches back
        if not start_offset <= request.offset <= plog.end_offset:
            if part.floor <= request.offset < start_offset:
                # The view may lack segments the store holds; below the floor,
                # deleteRecords hid the records whatever the store holds.
                self._require_listed(part, f"offset {request.offset} may be in object storage")
            raise OffsetOutOfRangeError(
                f"offset {request.offset} is out of range for {part.name}: "
                f"valid offsets are {start_offset} to {plog.end_offset}")
        bytes_max = min(request.bytes_max or limits.FETCH_BYTES_DEFAULT, limits.FETCH_BYTES_MAX)
        if request.offset < plog.start_offset or self._in_remote_gap(part, request.offset):
            self._fetch_remote(envelope, request.request_id, part, request.offset, bytes_max)
            return
        wait_ms = min(request.wait_ms_max, limits.FETCH_WAIT_MS_MAX)
        if request.offset >= part.high_watermark and wait_ms and not part.sealed:
            # (envelope, request id, partition, offset, bytes_max, received_s): what
            # _answer_parked needs; a plain tuple is the cheapest to build.
            parked = (envelope, request.request_id, part, request.offset, bytes_max,
                      self._received_s)
            # Parked places are shared fairly between clients: one client is one
            # connection at one router, [router id][client id].
            owner = (envelope[0].bytes, envelope[1].bytes)
            if self._purgatory.park(part.key, self._received_s + wait_ms / 1000, parked,
                                    self._answer_parked_fetch, owner):
                return
        self._send_fetch(envelope, request.request_id, part, request.offset, bytes_max,
                         self._received_s)

    def _in_remote_gap(self, part: Partition, offset: int) -> bool:
        """Whether ``offset`` is in a gap of the local log (a range that lived on
        another shard, ``PartitionLog.in_gap``) that the remote log holds: the
        router sends it here once that range is only in object storage, and
        reading on locally would skip its records. A gap the view does not hold
        reads on (a range retention removed), unless the view may not be the
        store's yet (``_require_listed``). Loop thread."""
        if not part.log.in_gap(offset):
            return False
        if part.remote.segment_for_offset(offset) is not None:
            return True
        self._require_listed(part, f"offset {offset} may be in object storage")
        return False

    def _require_listed(self, part: Partition, what: str) -> None:
        """UnavailableError if ``part`` is tiered and its remote view is not the store's
        yet (RemoteLogManager.view_synced: a new leader, a promoted follower or a
        restarted shard that has not listed the store, or the store down): ``what`` the
        answer needs (an offset the view lacks, the first record at a time, the log
        start) may be in a segment the view lacks, and a consumer told "out of range",
        a later offset or a later start would skip records. Loop thread."""
        if self._tier is None or not part.log.config.remote_storage_enable \
                or self._tier.view_synced(part):
            return
        raise UnavailableError(
            f"the remote log of {part.topic}/{part.partition} is not listed yet; retry "
            f"({what}, on {self.shard_id}, which knows {len(part.remote.segments)} remote "
            f"segments so far and the local log [{part.log.start_offset}, "
            f"{part.log.end_offset}])")

    def _check_direct_fetch(self, part: Partition) -> None:
        """A direct client's route is stale if the partition moved away (the router
        names no direct socket for a partition whose history spans shards) or is not
        led here any more: it is told so, drops the route and asks the router."""
        if part.sealed:
            raise UnavailableError(f"{part.name} moved away from {self.shard_id}; fetch it "
                                   f"through the router")
        role = self._roles.get(part.key)   # None: one copy, here
        if role is not None and type(role) is not Led:
            raise NotLeaderError(f"{part.name}: {self.shard_id} does not lead it; fetch it "
                                 f"through the router")

    def _send_fetch(self, envelope: list, request_id: int, part: Partition,
                    offset: int, bytes_max: int, received_s: float) -> None:
        data = b""
        if offset < part.high_watermark:
            data = part.log.read(offset, bytes_max, part.high_watermark)
        header = protocol.encode_fetch_reply(request_id, part.high_watermark, part.log_start_offset)
        self._reply(envelope, header, data)
        self.stats.fetched(part.key, len(data), records_from(data, offset) if data else 0)
        self.stats.observe("fetch", time.monotonic() - received_s)

    def _fetch_remote(self, envelope: list, request_id: int, part: Partition, offset: int,
                      bytes_max: int) -> None:
        """Hand a fetch below the local log start to the remote reader, or have it wait
        for the read of its offset already pending; answered by ``_remote_fetched``
        (tier/remote_fetcher.py), or empty by ``_answer_remote_wait_ended`` if the read
        is not back within REMOTE_FETCH_WAIT_MS_MAX (tier/remote_fetch_waits.py).
        Loop thread."""
        if part.remote.segment_for_offset(offset) is None:
            # a hole the store may fill: not out of range
            self._require_listed(part, f"offset {offset} may be in object storage")
        segment = remote_segment_for(part, offset)   # a hole: OffsetOutOfRangeError
        if self._remote_reader is None:
            raise StorageError(f"{part.name}: offset {offset} is in {segment.describe()}, and "
                               f"{self.shard_id} has no --tier-url to read it from")
        read = RemoteRead(envelope, request_id, part.key, segment, offset, bytes_max,
                          min(segment.end_offset, part.high_watermark), self._received_s)
        self._queue_remote(read, self._remote_waits)

    def _remote_segments_gone(self, part: Partition, segment_ids: tuple[str, ...],
                              why: str) -> None:
        """Remote segments of ``part`` left the store (retention deleted them): the
        reader drops their cached chunks (tier/remote_fetcher.py). Loop thread."""
        if self._remote_reader is not None:
            self._remote_reader.drop_segments(part.name, segment_ids, why)

    def _remote_fetched(self, result: RemoteReadResult | RemoteTimeResult) -> None:
        """The reader's answer to a remote read, posted to the loop: count it, and reply
        to the fetches still waiting for it (none: their waits ended, they were
        answered empty, and the read only warmed the chunk cache). Loop thread."""
        if type(result) is RemoteTimeResult:
            self._remote_time_found(result)
            return
        read = result.read
        now_s = time.monotonic()
        self.stats.remote_fetched(len(result.data), result.error is not None,
                                  now_s - read.received_s, result.cache_hits,
                                  result.cache_misses, result.cache_bytes)
        waiting = self._remote_waits.settle(read)
        if not waiting:
            return
        part, error = self._remote_read_outcome(read, result.error)
        for fetch in waiting:
            if error is not None:
                self.stats.error(error.code_name)
                self._reply(fetch.envelope, protocol.encode_error(fetch.request_id, error))
                continue
            # A fetch that joined the read may take fewer bytes, or end sooner.
            data = result.data if fetch is read else fit(fetch, result.data)
            header = protocol.encode_fetch_reply(fetch.request_id, part.high_watermark,
                                                 part.log_start_offset)
            self._reply(fetch.envelope, header, data)
            self.stats.fetched(part.key, len(data), records_from(data, fetch.offset))
            self.stats.observe("fetch", now_s - fetch.received_s)

    def _answer_remote_wait_ended(self, fetch: RemoteRead) -> None:
        """A remote fetch waited REMOTE_FETCH_WAIT_MS_MAX for its read: answered with no
        records and the partition's high watermark and log start, as an empty fetch is
        (its client fetches again; the read goes on). Loop thread."""
        part, error = self._remote_read_outcome(fetch, None)
        if error is not None:   # the partition went meanwhile
            self.stats.error(error.code_name)
            self._reply(fetch.envelope, protocol.encode_error(fetch.request_id, error))
            return
        self.stats.remote.fetch_waits_expired += 1   # a slow store, for the operator
        self._reply(fetch.envelope, protocol.encode_fetch_reply(
            fetch.request_id, part.high_watermark, part.log_start_offset), b"")
        self.stats.fetched(part.key, 0, 0)
        self.stats.observe("fetch", time.monotonic() - fetch.received_s)

    def _remote_time_found(self, result: RemoteTimeResult) -> None:
        """The reader's answer to a look-up by time (``_find_time_remotely``), checked as
        a fetch's is: the partition may have gone, or the segment been deleted by
        retention meanwhile (retriable). Counted once; it answers the look-ups still
        waiting for it (none: their waits ended, each was answered requestTimedOut,
        and the read only warmed the reader's indexes and chunk cache). Loop thread."""
        read = result.read
        _, error = self._remote_read_outcome(read, result.error)
        self.stats.remote_time_found(error is not None, time.monotonic() - read.received_s)
        for lookup in self._time_waits.settle(read):
            lookup.answer(result.found, error)

    def _answer_time_wait_ended(self, lookup: RemoteTimeRead) -> None:
        """A look-up by time waited REMOTE_TIME_LOOKUP_WAIT_MS_MAX for its read: it has no
        empty answer, so requestTimedOut, retriable (Kafka's REQUEST_TIMED_OUT, as its
        DelayedRemoteListOffsets answers): the client's retry joins the read, which
        goes on. Loop thread."""
        self.stats.remote.time_lookup_waits_expired += 1   # a slow store, for the operator
        lookup.answer(None, RequestTimedOutError(
            f"look-up of time {lookup.timestamp_ms} ms in {lookup.key[0]}-{lookup.key[1]} from "
            f"offset {lookup.offset}: {lookup.segment.describe()} was not read from object "
            f"storage within {self._time_waits.wait_ms} ms (the read goes on, and a retry "
            f"joins it); the store is slow: retry"))

    def _remote_read_outcome(self, read, error: BrokerError | None
                             ) -> tuple[Partition | None, BrokerError | None]:
        """A remote read's partition now, and the error its client is told: the
        reader's, as a deleted segment's is answered, or, if the partition has gone
        meanwhile, a retriable unavailable. Loop thread."""
        part = partition_read(read, self._partitions)
        error = error if error is None else answer_for_deleted(error, read, part)
        if error is None and part is None:
            error = UnavailableError(f"partition {read.key[0]}-{read.key[1]} (topic id "
                                     f"{read.segment.topic_id}) is not on {self.shard_id} "
                                     f"any more; retry")
        return part, error

    def _answer_parked(self, parked: tuple, error: BrokerError | None) -> None:
        """The purgatory settles a parked fetch: the log moved, its wait ended, or
        ``error`` (its partition was deleted)."""
        envelope, request_id = parked[0], parked[1]
        if error is None:
            try:
                self._send_fetch(*parked)
                return
            except BrokerError as exc:
                error = exc
        self._reply(envelope, protocol.encode_error(request_id, error))

    def _cut_after_failed_fsync(self, part: Partition, error: StorageError) -> None:
        """Group commit's fsync of ``part`` failed (loop thread). What was written since
        its last good fsync may not be on the disk while the page cache still serves
        it, and the kernel reports a failed writeback once: the next fsync succeeds
        without writing it (PostgreSQL's "fsyncgate"). Seen here on ext4 over a disk
        that ran out of room under it: the next fsync succeeded, the batch read back
        as zeros once the cache was dropped, and the high watermark had passed it; a
        restart's recovery would then cut every later, acknowledged record at that
        hole. So the log is cut back to its last good fsync (``cut_unflushed``), with
        its producers' state: an idempotent retry of the failed batch is appended
        again, not answered as a duplicate of one the disk lost. Under "always" none
        of it was acknowledged; under "interval" or "never" it was, as those policies
        allow before an fsync, and the log says so. A replicated partition led here
        is not cut: cut inside its leader epoch, its followers' copies of those
        offsets would differ from what it writes next. It refuses every fsync (so
        every produce) from now on, and the controller is told, as of a full disk, so
        that it hands the partition to an in-sync replica (control/disk_moves.py),
        which fetches the whole log first; here it then follows, and its next fsync
        cuts what it had not written and fetches it again (README, Reliability)."""
        said = self._fsync_failures_said   # (producers retry every few ms)
        if type(self._roles.get(part.key)) is Led:
            said.log(logging.ERROR, part.name, "%s; not cut: %s leads %s, and asks the "
                     "controller to move it", error, self.shard_id, part.name)
            self._replication.append_refused(part, error, time.monotonic())
            return
        try:
            cut = part.cut_unflushed()
        except (StorageError, CorruptDataError) as exc:   # the disk refuses it too: retried
            said.log(logging.ERROR, part.name, "%s, and cutting what it may not have written "
                     "failed too: %s", error, exc)
            return
        if cut.old_end_offset > cut.end_offset:
            said.log(logging.ERROR, part.name, "%s: cut offsets %d to %d (%d bytes), written "
                     "since its last good fsync%s", error, cut.end_offset,
                     cut.old_end_offset - 1, cut.bytes,
                     "" if self._group_commit.fsync_policy == "always" else
                     f", which fsync policy {self._group_commit.fsync_policy!r} had "
                     f"acknowledged before their fsync")

    def _readable(self, part: Partition) -> None:
        """Group commit moved ``part``'s high watermark: answer the fetches waiting for it."""
        self._purgatory.wake(part.key)

