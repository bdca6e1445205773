"""The uploading side of tiered storage, as Kafka's RemoteLogManager: one uploader per shard.

Threads. The shard's loop thread owns every Partition (shard_server.py); the
uploader thread owns the object store (remote_store.py), every partition's
RemoteLogMetadata (remote_log_metadata.py, its journal in the partition's
directory) and the topic deletions still removing remote objects. They meet at
two queues, and the loop never waits on the store:

    loop thread                                  uploader thread
    run_timers: for each tiered partition led
    here (or of one copy here), the next rolled
    segment below the high watermark, as a
    LocalSegment, marked in flight  ── job ──►   open the metadata (clean up what a
                                                 crash or an error left), upload,
                                                 apply total retention remotely
    _published: part.remote = view, then   ◄──   a new RemoteLogView after each change
    local retention; _finished: counters,        (ShardServer._post: queued for the
    backoff, the next segment at once            loop, which is woken)

At most one job per partition is in flight, so the loop's view of the remote
log is current whenever it picks the next segment. The job queue is bounded
(REMOTE_UPLOAD_JOBS_QUEUED_MAX); a full queue makes the loop try at its next
check. A failed job (the store unavailable or refusing, a segment file gone
because the log was reset under it) is retried after a backoff doubling from
REMOTE_UPLOAD_BACKOFF_MS_MIN to _MAX; the first failure of a streak is logged,
and every one counted. Before the next attempt the uploader runs
``clean_up_unfinished`` (remote_transfer.py), so a half-done upload never
stays visible nor leaks.

Taking a partition over. The first job of a partition (each time this shard
starts uploading it: at its start, or when it leads again after another shard
did) opens its metadata and publishes the journal's view (reads below the local
log start work from here on, even with the store down), then lists the
partition's manifests under its topic id (remote_transfer.sync_with_store):
segments another leader uploaded are adopted, ones another leader's retention
deleted are forgotten, and only then is the view published as synced. Before
that the loop neither picks a segment to upload nor applies local retention, so
a new leader, a promoted follower or a shard that lost its disk uploads only
past the remote end the store holds: no duplicates, and the old leader's
segments are retained away like its own. A partition that stops being uploaded
here (it no longer leads) loses its bookkeeping, so it syncs again if it leads
again.

Followers. A shard holding a copy of a tiered partition another shard leads
does not upload it, but every REMOTE_FOLLOWER_REFRESH_INTERVAL_S (the first time
at once) the uploader thread lists its manifests under its topic id, reading
only those not in the partition's current view (remote_transfer.
refresh_remote_segments), and posts the new view; the loop then applies local
retention up to the view's end (tier_policy deletes only what the store holds),
besides the total retention it always applied. A listing that fails is logged
once per streak and tried at the next interval; local retention waits for it.

A removed shard's ranges (issue 14). A partition sealed here (its writes
moved away) is uploaded here whole, its last segment rolled at the seal.
``wholly_remote`` says when every record of it is in the store; the controller
asks (ShardServer.tiered_sealed), and then asks the partition's owner whether its
view covers the range (ShardServer.covers_remote). The owner listed the store
only when it began uploading, so a range uploaded since is missing from its
view: ``request_resync`` makes its next job list the store again (at most one
such listing per REMOTE_RESYNC_INTERVAL_S_MIN; a later request waits for it).
Once a listing made after the latest request is in the view
(``listed_since_request``), offsets below the partition's log start were
deleted by total retention, not missed. Two events nudge the controller
(``tiering_changed``, from the uploader thread, so the loop never makes a Ray
call): a sealed partition turned wholly remote (once per partition per shard
run), and a requested re-sync listed the store (after its view was posted, so
the controller's next call sees it). The controller also polls: a lost nudge
delays a retirement, nothing else.

Remote end mark. Which local segments are uploaded is judged per segment
(tier_policy.held_remotely): the view covers it, or it ends at or below the
highest end offset this shard's own uploads (and total retention's remote
deletions) ever reached (``uploaded_end``): total retention may delete remote
segments whose local copies local retention has not dropped yet; they must
neither be uploaded again nor be kept locally for good. The view's end does
not move the mark: segments adopted from another shard say nothing of the
local ones below them. The mark is not kept across a restart: after one, such a segment
(past total retention, still local) is uploaded once more and deleted again.

Cached chunks. Segments that leave a partition's view because the store loses
them (total retention here: with the view posted before their objects go;
another shard's retention, seen in a listing: ``_sync``, ``_refreshed``) are
told to ``segments_gone`` on the loop thread, so that the remote reader drops
their chunks from its cache (remote_fetcher.py); a deleted partition's go when
ShardServer.delete_partition asks the reader.

Topic deletion (``forget``, loop thread). The partition's journal is moved out
of the partition directory before the directory is deleted, into

    <data dir>/remote-deletions/<n>/remote-log-metadata   the journal, moved (rename)
                                    deletion.json         {"topic": ..., "topic_id": ...,
                                                           "partition": ...,
                                                           "deleted_ms": ...,
                                                           "store": ...}

(``topic_id`` "" for a partition that was not open here: its journal's segments
only; ``store`` the store's identity, remote_store.store_identity: scheme, bucket
and prefix, never a credential; absent in a file written before it was recorded)
and the uploader deletes, in the background and with the same backoff,
every segment the journal tracks and every segment whose manifest the store
lists under the partition's topic-id prefix (another leader's uploads; a topic
created again under the same name has another id, so none of its segments),
journaling each deletion in the moved journal, then any object left under the
prefix (half-done uploads of other shards, corrupt manifests: the prefix is the
deleted topic's alone), then removes the directory. A restart finds
the directories and carries on, so a shard that dies in the middle leaks
nothing it knew of.

A restart with no --tier-url, or with one naming another store than a deletion's,
could not carry on: the first never runs the deletions, the second would find
nothing under the prefix in the wrong store and drop them, their objects left in
the right one for good. So the uploader runs only the deletions of its own store
(and those whose store is not recorded: they can only be run where the shard now
tiers), and a shard says at start which it cannot run (``stranded_deletions``,
in its stats as STRANDED_DELETIONS_STAT); the controller then refuses the start,
naming them and their store (controller.py, ``_refuse_stranded_deletions``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plinth import limits
from plinth.durable_files import fsync_directory, write_json_atomically
from plinth.errors import BrokerError
from plinth.shards.partition import Partition
from plinth.shards.producer_state import load_snapshot
from plinth.shards.replica_server import Led
from plinth.shards.segment import Segment
from plinth.shards.shard_calls import ControllerAnnouncements
from plinth.shards.tier.remote_log_metadata import JOURNAL_FILE, RemoteLogMetadata
from plinth.shards.tier.remote_log_view import RemoteLogView
from plinth.shards.tier.remote_segment import RemoteSegment, partition_prefix
from plinth.shards.tier.remote_store import (RemoteStore, open_remote_store, redacted_url,
                                              store_identity)
from plinth.shards.tier.store_claim import ClaimFence
from plinth.shards.tier.remote_transfer import (
    LocalSegment, clean_up_unfinished, delete_segment, refresh_remote_segments,
    sync_with_store, upload_segment, wall_clock_ms)
from plinth.shards.tier.tier_policy import held_remotely, segments_to_upload

log = logging.getLogger(__name__)

__all__ = ["DELETIONS_DIR", "STRANDED_DELETIONS_STAT", "RemoteLogManager", "stranded_deletions"]

DELETIONS_DIR = "remote-deletions"
DELETION_FILE = "deletion.json"
# The key of a shard's stats snapshot that lists the deletions it cannot run
# (``stranded_deletions``); absent when there are none.
STRANDED_DELETIONS_STAT = "remote_deletions_stranded"
# How many of a store's stranded deletions a shard names (the rest are counted).
_STRANDED_NAMED_MAX = 10
_STOP = object()          # the uploader's queue: end the thread
_DELETIONS = object()     # the uploader's queue: a deletion was added on disk
_epochs = itertools.count(1)   # tells a recreated partition's jobs from its predecessor's


@dataclass(frozen=True)
class _Job:
    """One partition's work for the uploader, built on the loop thread."""

    key: tuple[str, int]
    topic_id: str                  # names its remote segments (remote_segment.py)
    epoch: int                     # the loop's _TierState.epoch for this partition
    directory: Path                # the partition's directory: its journal is there
    segment: LocalSegment | None   # None: open, clean up and apply retention only
    retention_ms: int
    retention_bytes: int
    local_only_bytes: int          # local bytes above the remote end (with ``segment``'s)
    resync_request: int = 0        # list the store again first, for this request_resync (0: no)
    log_start_floor: int = 0       # deleteRecords' floor (Partition.floor): nothing below is kept


@dataclass
class _TierState:
    """The loop's bookkeeping of one tiered partition. Loop thread only."""

    epoch: int
    synced: bool = False           # a view has come back since the shard started
    in_flight: bool = False
    retry_at_s: float = 0.0
    backoff_ms: int = 0            # 0: not in a failure streak
    next_retention_s: float = 0.0
    uploaded_end: int | None = None   # module docstring: the remote end mark
    uploading_end: int | None = None  # the end of the segment in flight, if any
    uploads: int = 0
    upload_errors: int = 0
    resync_wanted: bool = False    # request_resync: a job lists the store again
    next_resync_s: float = 0.0     # not before this (REMOTE_RESYNC_INTERVAL_S_MIN)
    resync_requests: int = 0       # request_resync calls so far
    listed_request: int = 0        # the latest of them a finished listing began after
    nudged: bool = False           # the controller was told it turned wholly remote
    last_error: str = ""           # the last job's error ("": it succeeded), for describe

    def uploaded(self, part: Partition):
        """Which of ``part``'s local segments object storage holds (tier_policy)."""
        return held_remotely(part.remote, self.uploaded_end)


@dataclass(frozen=True)
class _Dropped:
    """A copy of a partition dropped here, its remote log kept: close its handle."""

    key: tuple[str, int]


@dataclass(frozen=True)
class _Nudge:
    """Tell the controller that tiering changed here (uploader thread: a Ray call)."""

    key: tuple[str, int]
    why: str                       # for the log: "wholly remote", "re-synced"


@dataclass(frozen=True)
class _Refresh:
    """A followed partition's look at the store, built on the loop thread."""

    key: tuple[str, int]
    topic_id: str
    epoch: int                                # the loop's _FollowState.epoch
    known: tuple[RemoteSegment, ...]          # its current view's: not read again


@dataclass
class _FollowState:
    """The loop's bookkeeping of one tiered partition this shard follows. Loop thread only."""

    epoch: int
    in_flight: bool = False
    next_refresh_s: float = 0.0
    synced: bool = False           # a listing came back: part.remote is the store's
    failing: bool = False          # the last listing failed (logged once per streak)
    last_error: str = ""           # its error, for describe


@dataclass
class _Remote:
    """The uploader's handle on one partition's metadata. Uploader thread only."""

    epoch: int
    metadata: RemoteLogMetadata
    clean: bool = False            # clean_up_unfinished ran since the last failure
    synced: bool = False           # sync_with_store ran: the metadata has the store's segments


@dataclass
class _Deletion:
    """A topic deletion still removing remote objects. Uploader thread only."""

    directory: Path
    topic: str
    topic_id: str                  # "": unknown (a partition that was not open here)
    partition: int
    deleted_ms: int
    store: str | None              # store_identity of its store; None: not recorded (older)
    retry_at_s: float = 0.0
    backoff_ms: int = 0

    @classmethod
    def read(cls, directory: Path) -> _Deletion:
        """The deletion recorded in ``directory`` (any thread). Raises OSError,
        ValueError, KeyError or TypeError for a file that cannot be read (it is
        written atomically: only a hand-edited one)."""
        record = json.loads((directory / DELETION_FILE).read_text())
        store = record.get("store")   # absent: written before stores were recorded
        return cls(directory, str(record["topic"]),
                   str(record.get("topic_id", "")),   # absent: before topic ids
                   int(record["partition"]), int(record["deleted_ms"]),
                   None if store is None else str(store))

    def runs_in(self, store: str | None) -> bool:
        """Whether a shard tiering to ``store`` (None: no --tier-url) can run it."""
        return store is not None and self.store in (None, store)


class RemoteLogManager:
    """One shard's uploads, local and remote retention of tiered partitions.

    Constructed, started and stopped on the actor's thread (ShardServer.start,
    stop); ``run_timers``, ``opened``, ``uploads``, ``follows``, ``view_synced``,
    ``wholly_remote``, ``request_resync``, ``enforce_local_retention``,
    ``enforce_follower_retention``, ``forget`` and ``stats`` on the loop thread;
    everything else runs on its uploader thread.
    ``post(fn, *args)`` runs ``fn`` on the loop thread (ShardServer._post).
    """

    def __init__(self, shard_id: str, data_dir: Path, url: str, *,
                 partitions: dict[tuple[str, int], Partition], roles: dict, post,
                 controller: ControllerAnnouncements | None = None,
                 segments_gone: Callable[[Partition, tuple[str, ...], str], None] | None = None,
                 claim: tuple[str, str] | None = None):
        """``controller``: nudged (``tiering_changed``) from the uploader thread when
        a sealed partition turns wholly remote or a requested re-sync listed the
        store; None: never (unit tests). ``segments_gone(part, segment ids, why)``:
        called on the loop thread when segments leave ``part``'s view because the
        store no longer holds them, or is about to lose them (total retention
        here, or another shard's seen in a listing), so their cached chunks can go
        (ShardServer: remote_fetcher.py); None: nobody is told. ``claim``: (the data
        dir's identity, the server start's instance id): every deletion in the store
        waits until the store's claim names that start (store_claim.py); None: no
        fence (unit tests)."""
        self.shard_id = shard_id
        self._controller = controller
        self.data_dir = Path(data_dir)
        self._url = url
        self._partitions = partitions
        self._roles = roles
        self._post_fn = post
        self._segments_gone = segments_gone
        self._jobs: queue.Queue = queue.Queue(maxsize=limits.REMOTE_UPLOAD_JOBS_QUEUED_MAX)
        self._states: dict[tuple[str, int], _TierState] = {}   # loop thread
        self._follows: dict[tuple[str, int], _FollowState] = {}   # loop thread
        self._next_check_s = 0.0                               # loop thread
        self._remotes: dict[tuple[str, int], _Remote] = {}     # uploader thread
        # Remote segments found lost per partition (_say_lost): written by the uploader
        # thread, read whole by stats on the loop thread (an int per key).
        self._segments_lost: dict[tuple[str, int], int] = {}
        self._deletions: dict[Path, _Deletion] = {}            # uploader thread
        self._foreign: set[Path] = set()   # another store's deletions (uploader thread)
        # Epochs of deleted partitions whose job may still be queued or running: the
        # uploader must not open (and so create again) their directory.
        self._forgotten: set[int] = set()
        self._forgotten_lock = threading.Lock()
        self._store: RemoteStore | None = None
        self._claim = claim
        self._fence: ClaimFence | None = None   # uploader thread, once started
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def deletions_dir(self) -> Path:
        return self.data_dir / DELETIONS_DIR

    # --- Lifecycle (actor thread) -------------------------------------------------

    def start(self) -> None:
        """Open the store (nothing is contacted yet) and start the uploader thread. A
        file:// store's missing directory is not refused here (the server checked it
        at start): uploads fail as unavailable until it is back."""
        self._store = open_remote_store(self._url, missing_root_ok=True)
        if self._claim is not None:
            self._fence = ClaimFence(self._store, *self._claim)
        self._thread = threading.Thread(target=self._run, name=f"{self.shard_id}-uploader",
                                        daemon=True)
        self._thread.start()

    def stop(self, grace_period_s: float = limits.SHUTDOWN_GRACE_PERIOD_S) -> None:
        """End the uploader thread, waiting at most ``grace_period_s`` (an upload to a
        store that does not answer ends within the store's own bounds, later)."""
        if self._thread is None:
            return
        self._stopping = True
        try:
            self._jobs.put_nowait(_STOP)
        except queue.Full:
            pass   # it checks _stopping after its current job
        self._thread.join(grace_period_s)
        if self._thread.is_alive():
            log.warning("%s: the uploader did not stop within %.1f s (an upload is waiting on "
                        "%s); leaving it to end on its own", self.shard_id, grace_period_s,
                        self._store.url)
        self._thread = None

    # --- The loop's side (loop thread) ----------------------------------------------

    def uploads(self, part: Partition) -> bool:
        """Whether this shard uploads ``part``: its topic is tiered and it is led here or
        has its one copy here. Followers do not upload (``follows``)."""
        if not part.log.config.remote_storage_enable or not part.topic_id:
            return False   # (no id: an old manifest's, until the controller opens it again)
        role = self._roles.get(part.key)
        return role is None or type(role) is Led

    def run_timers(self, now_s: float) -> None:
        """Every REMOTE_UPLOAD_CHECK_INTERVAL_S: hand each idle tiered partition's next
        segment (or, now and then, a retention pass) to the uploader."""
        if now_s < self._next_check_s:
            return
        self._next_check_s = now_s + limits.REMOTE_UPLOAD_CHECK_INTERVAL_S
        for part in list(self._partitions.values()):
            if self.uploads(part):
                self._follows.pop(part.key, None)
                self._consider(part, now_s)
                continue
            if part.key in self._states and not self._states[part.key].in_flight:
                # It stopped leading here: if it leads again, another leader may have
                # uploaded meanwhile, so the uploader must sync with the store again
                # (a new epoch reopens its metadata).
                del self._states[part.key]
            if self.follows(part):
                self._consider_refresh(part, now_s)
            else:
                self._follows.pop(part.key, None)

    def opened(self, part: Partition) -> None:
        """The controller opened ``part`` here (loop thread): list its store now if it
        is tiered and uploaded or followed here, not at the next check. Until its view
        is the store's, fetches below the local log and resets to the earliest offset
        (listOffsets' requireListed) are told to retry: a topic just created was, for
        up to REMOTE_UPLOAD_CHECK_INTERVAL_S."""
        now_s = time.monotonic()
        if self.uploads(part):
            self._consider(part, now_s)
        elif self.follows(part):
            self._consider_refresh(part, now_s)

    def follows(self, part: Partition) -> bool:
        """Whether ``part`` is a tiered partition another shard leads (or none does now)
        and this one holds a copy of: it learns the remote log from the store's
        listing now and then, and applies local retention up to its end."""
        if not part.log.config.remote_storage_enable or not part.topic_id:
            return False
        role = self._roles.get(part.key)
        return role is not None and type(role) is not Led

    def view_synced(self, part: Partition) -> bool:
        """Whether ``part.remote`` is the store's (loop thread): listed since this shard
        began uploading it (or, for a follower, since it began following it). Before
        that, an offset the view lacks may be in the store all the same (a new leader,
        a promoted follower, a restarted owner). True for a partition neither
        uploaded nor followed here: there is nothing to list."""
        if self.uploads(part):
            state = self._states.get(part.key)
            return state is not None and state.synced
        if self.follows(part):
            follow = self._follows.get(part.key)
            return follow is not None and follow.synced
        return True

    def not_listed(self, part: Partition) -> str:
        """"" if ``part.remote`` is the store's (``view_synced``); else why it may lack
        segments the store holds, for describe (loop thread): since when this shard has
        not listed the store, and the last try's error, if one came back."""
        if self.view_synced(part):
            return ""
        uploads = self.uploads(part)
        state = self._states.get(part.key) if uploads else self._follows.get(part.key)
        error = state.last_error if state is not None else ""
        if len(error) > limits.REMOTE_NOT_LISTED_ERROR_CHARS_MAX:
            error = error[:limits.REMOTE_NOT_LISTED_ERROR_CHARS_MAX] + "..."
        return (f"{self.shard_id} has not listed object storage since it began "
                f"{'uploading' if uploads else 'following'} {part.name}: "
                + (f"the last try failed: {error}" if error else "no listing has come back yet"))

    def wholly_remote(self, part: Partition) -> bool:
        """Whether every record of ``part``, a partition sealed here, is in object
        storage (loop thread): this shard uploads it and has listed the store, its
        last segment rolled (ShardServer._seal, set_log_config), and each local
        segment holding records is covered by the remote log or was deleted
        remotely by total retention (``_TierState.uploaded``). Segments local
        retention dropped were uploaded first. False while any upload remains (the
        store down, a backlog), and for a partition not sealed or not tiered."""
        if not part.sealed or not self.uploads(part):
            return False
        state = self._states.get(part.key)
        segments = part.log.segments
        if state is None or not state.synced or not segments[-1].is_empty:
            return False
        uploaded = state.uploaded(part)
        return all(segment.is_empty or uploaded(segment) for segment in segments[:-1])

    def request_resync(self, part: Partition) -> None:
        """List ``part``'s manifests again (loop thread): another shard (a draining one)
        uploaded segments since this one's last listing, and the owner must serve
        them (issue 14). The listing goes with the partition's next job, at most one
        per REMOTE_RESYNC_INTERVAL_S_MIN (a request within it waits, it is not
        dropped: the range it asks for may have been uploaded after the last
        listing began); the controller is nudged once it is done. Nothing for a
        partition not uploaded here."""
        if not self.uploads(part):
            return
        state = self._states.get(part.key)
        if state is None:   # not considered yet: its first job lists, and then nudges
            state = self._states[part.key] = _TierState(next(_epochs))
        state.resync_wanted = True
        state.resync_requests += 1
        self._consider(part, time.monotonic())

    def listed_since_request(self, part: Partition) -> bool:
        """Whether ``part``'s view comes from a listing of the store that began after the
        latest ``request_resync`` (loop thread). Then it holds every segment uploaded
        before that request, so an offset below its log start that a draining shard
        uploaded before it was deleted by total retention since, not missing from
        the view (ShardServer.covers_remote)."""
        state = self._states.get(part.key)
        return (state is not None and state.resync_requests > 0
                and state.listed_request == state.resync_requests)

    def _nudge_if_wholly_remote(self, part: Partition, state: _TierState) -> None:
        """Once per partition (per shard run): queue the controller's nudge when a
        sealed partition turned wholly remote. Loop thread; the uploader calls."""
        if self._controller is None or state.nudged or not self.wholly_remote(part):
            return
        try:
            self._jobs.put_nowait(_Nudge(part.key, "wholly remote"))
        except queue.Full:
            return   # the next job's outcome tries again; the controller polls anyway
        state.nudged = True

    def _consider_refresh(self, part: Partition, now_s: float) -> None:
        state = self._follows.get(part.key)
        if state is None:
            state = self._follows[part.key] = _FollowState(next(_epochs))
        if state.in_flight or now_s < state.next_refresh_s:
            return
        try:
            self._jobs.put_nowait(_Refresh(part.key, part.topic_id, state.epoch,
                                           part.remote.segments))
        except queue.Full:
            return   # the next check tries again
        state.in_flight = True
        state.next_refresh_s = now_s + limits.REMOTE_FOLLOWER_REFRESH_INTERVAL_S

    def _refreshed(self, key: tuple[str, int], epoch: int, view: RemoteLogView | None,
                   error: str | None) -> None:
        """A followed partition's listing came back (loop thread, posted): its view,
        then local retention up to the store's remote end."""
        state, part = self._follows.get(key), self._partitions.get(key)
        if state is None or part is None or state.epoch != epoch:
            return   # deleted, or it leads now
        state.in_flight = False
        state.last_error = error or ""
        if error is not None:
            if not state.failing:
                log.warning("%s: listing the remote segments of followed %s failed, next "
                            "try in %.0f s: %s", self.shard_id, part.name,
                            limits.REMOTE_FOLLOWER_REFRESH_INTERVAL_S, error)
            state.failing = True
            return
        state.failing, state.synced = False, True
        listed = {segment.segment_id for segment in view.segments}
        self._gone(part, tuple(segment.segment_id for segment in part.remote.segments
                               if segment.segment_id not in listed),
                   "the store no longer lists (retention by its leader)")
        part.remote = view
        self.enforce_follower_retention(part)

    def _gone(self, part: Partition, segment_ids: tuple[str, ...], why: str) -> None:
        """Tell ``segments_gone`` (loop thread), if there is anything to tell."""
        if segment_ids and self._segments_gone is not None:
            self._segments_gone(part, segment_ids, why)

    def enforce_follower_retention(self, part: Partition) -> None:
        """Local retention of a followed tiered partition (loop thread): only what the
        store held at the last listing (tier_policy refuses anything else); nothing
        before a listing came back."""
        state = self._follows.get(part.key)
        if state is not None and state.synced and self.follows(part):
            part.enforce_local_retention(held_remotely(part.remote))

    def _consider(self, part: Partition, now_s: float) -> None:
        state = self._states.get(part.key)
        if state is None:
            state = self._states[part.key] = _TierState(next(_epochs))
        if state.in_flight or now_s < state.retry_at_s:
            return
        segment = None
        resync = state.resync_wanted and now_s >= state.next_resync_s
        if state.synced:   # before the first view, the remote end is unknown
            waiting = segments_to_upload(part.log.segments, high_watermark=part.high_watermark,
                                         uploaded=state.uploaded(part))
            segment = waiting[0] if waiting else None
            if segment is None and now_s < state.next_retention_s and not resync:
                return
        try:
            self._jobs.put_nowait(self._job(part, state, segment,
                                            state.resync_requests if resync else 0))
        except queue.Full:
            return   # the next check tries again
        state.in_flight = True
        if resync:
            state.resync_wanted = False
            state.next_resync_s = now_s + limits.REMOTE_RESYNC_INTERVAL_S_MIN
        if segment is None:
            state.next_retention_s = now_s + limits.RETENTION_CHECK_INTERVAL_S

    def _job(self, part: Partition, state: _TierState, segment: Segment | None,
             resync_request: int = 0) -> _Job:
        config = part.log.config
        uploaded = state.uploaded(part)
        local_only_bytes = sum(s.size_bytes for s in part.log.segments if not uploaded(s))
        local = None
        state.uploading_end = None if segment is None else segment.end_offset
        if segment is not None:
            local = LocalSegment.of(segment, topic=part.topic, topic_id=part.topic_id,
                                    partition=part.partition, leader_epochs=part.leader_epochs,
                                    producers=_producers_after(part, segment))
        return _Job(part.key, part.topic_id, state.epoch, part.log.directory, local,
                    config.retention_ms, config.retention_bytes, local_only_bytes, resync_request,
                    part.floor)

    def _published(self, key: tuple[str, int], epoch: int, view: RemoteLogView,
                   uploaded: bool, deleted_end: int | None, synced: bool,
                   listed_request: int = 0, gone: tuple[str, ...] = (),
                   gone_why: str = "") -> None:
        """The uploader changed the remote log (loop thread, posted). ``synced``: the
        view holds what the store lists (sync_with_store ran); before that it is
        only this shard's journal's, good for reads but not for choosing uploads.
        ``listed_request``: the view is a listing made for that request_resync.
        ``gone``: ids of segments the view dropped because the store loses them
        (``gone_why``), told to ``segments_gone`` once the view no longer has them."""
        state, part = self._states.get(key), self._partitions.get(key)
        if state is None or part is None or state.epoch != epoch:
            return   # deleted (or deleted and created again) meanwhile
        part.remote = view
        self._gone(part, gone, gone_why)
        state.synced = state.synced or synced
        state.listed_request = max(state.listed_request, listed_request)
        state.uploads += uploaded
        # Only this shard's own upload (and total retention's deletions) move the mark,
        # never the view's end: adopted segments say nothing of the local ones below.
        for end in (state.uploading_end if uploaded else None, deleted_end):
            if end is not None and (state.uploaded_end is None or end > state.uploaded_end):
                state.uploaded_end = end
        if self.uploads(part):
            self.enforce_local_retention(part)
            self._nudge_if_wholly_remote(part, state)

    def _finished(self, key: tuple[str, int], epoch: int, error: str | None) -> None:
        """The uploader is done with a job (loop thread, posted): the next one at once,
        or a backoff after a failure."""
        state, part = self._states.get(key), self._partitions.get(key)
        if state is None or part is None or state.epoch != epoch:
            return
        state.in_flight = False
        state.last_error = error or ""
        now_s = time.monotonic()
        if error is None:
            if state.backoff_ms:
                log.info("%s: uploads of %s work again", self.shard_id, part.name)
            state.backoff_ms = 0
            if self.uploads(part):
                self._nudge_if_wholly_remote(part, state)   # (sealed after its last upload)
                self._consider(part, now_s)
            return
        state.upload_errors += 1
        if not state.backoff_ms:   # once per failure streak
            log.warning("%s: upload of %s failed, retrying with backoff (%d to %d ms): %s",
                        self.shard_id, part.name, limits.REMOTE_UPLOAD_BACKOFF_MS_MIN,
                        limits.REMOTE_UPLOAD_BACKOFF_MS_MAX, error)
        state.backoff_ms = min(max(2 * state.backoff_ms, limits.REMOTE_UPLOAD_BACKOFF_MS_MIN),
                               limits.REMOTE_UPLOAD_BACKOFF_MS_MAX)
        state.retry_at_s = now_s + state.backoff_ms / 1000

    def enforce_local_retention(self, part: Partition) -> None:
        """Local retention of a partition this shard uploads (Partition.enforce_local_retention)
        up to the remote end mark; nothing before the first view came back."""
        state = self._states.get(part.key)
        part.enforce_local_retention(state.uploaded(part) if state and state.synced else None)

    def forget(self, part: Partition | None, directory: Path, keep_remote: bool = False) -> None:
        """The partition is being deleted (loop thread, before its directory goes): its
        uploads stop and its remote objects are deleted in the background (module
        docstring). ``part`` None: a partition not open here, whose directory may
        still hold a journal. ``keep_remote``: only this shard's copy goes (a range
        it held was pruned, or a replica moved away): the remote log is the
        partition's, read and uploaded by its owner, and stays."""
        state = self._states.pop(part.key, None) if part is not None else None
        if state is not None and state.in_flight:
            with self._forgotten_lock:   # (see _remote_for)
                self._forgotten.add(state.epoch)
        if keep_remote:
            if part is not None:
                try:
                    self._jobs.put_nowait(_Dropped(part.key))
                except queue.Full:   # its handle closes when the key is next used
                    pass
            return
        journal = Path(directory) / JOURNAL_FILE
        tiered = part is not None and part.log.config.remote_storage_enable
        if not (tiered or journal.exists()):
            return
        topic, partition = (part.topic, part.partition) if part is not None else \
            _parse_partition_dir(Path(directory).name)
        pending = self.deletions_dir / f"{time.time_ns()}"
        try:
            pending.mkdir(parents=True)
            write_json_atomically(pending / DELETION_FILE, {
                "topic": topic, "topic_id": part.topic_id if part is not None else "",
                "partition": partition, "deleted_ms": wall_clock_ms(),
                "store": store_identity(self._url)})
            if journal.exists():
                os.rename(journal, pending / JOURNAL_FILE)   # the uploader's fd follows it
            fsync_directory(pending)
            fsync_directory(self.deletions_dir)
        except OSError as exc:   # the topic is deleted all the same; its objects stay
            log.error("%s: cannot record the deletion of %s-%d's remote segments in %s: %s; "
                      "they stay in the store", self.shard_id, topic, partition, pending, exc)
            return
        try:
            self._jobs.put_nowait(_DELETIONS)
        except queue.Full:
            pass   # the uploader looks at the directory after each job too

    def stats(self) -> dict[tuple[str, int], dict]:
        """Per partition this shard uploads: remote bytes and segments, upload lag in
        bytes (local bytes above the remote end and below the high watermark, in
        whole segments) and seconds (since the oldest waiting rolled segment was last
        written), uploads done, upload errors, and whether its view is the store's
        (``remote_listed``, 1 or 0: ``view_synced``; until then the remote figures may
        lack segments)."""
        now_ms = wall_clock_ms()
        result = {}
        for key, state in self._states.items():
            part = self._partitions.get(key)
            if part is None:
                continue
            uploaded = state.uploaded(part)
            waiting = [s for s in part.log.segments if s.size_bytes and not uploaded(s)
                       and s.end_offset <= part.high_watermark]
            rolled = [s for s in waiting if s is not part.log.segments[-1]]
            result[key] = {
                "remote_bytes": part.remote.remote_bytes,
                "remote_segments": len(part.remote.segments),
                "remote_log_start_offset": part.remote.log_start_offset,
                "remote_end_offset": part.remote.end_offset,
                "upload_lag_bytes": sum(s.size_bytes for s in waiting),
                "upload_lag_s": (max(0, now_ms - rolled[0].last_written_ms) / 1000
                                 if rolled else 0.0),
                "uploads": state.uploads, "upload_errors": state.upload_errors,
                "remote_segments_lost": self._segments_lost.get(key, 0),
                "remote_listed": int(state.synced)}
        return result

    # --- The uploader (its thread) ------------------------------------------------------

    def _run(self) -> None:
        try:
            self._load_deletions()
            while not self._stopping:
                try:
                    job = self._jobs.get(timeout=self._deletion_wait_s())
                except queue.Empty:
                    job = None
                if job is _STOP:
                    break
                if isinstance(job, _Job):
                    self._serve(job)
                elif isinstance(job, _Refresh):
                    self._refresh(job)
                elif isinstance(job, _Dropped):
                    self._close_remote(job.key)
                elif isinstance(job, _Nudge):
                    self._nudge(job)
                elif job is _DELETIONS:
                    self._load_deletions()
                self._run_deletions()
        except BaseException:
            log.exception("%s: the uploader thread failed; nothing is uploaded until the "
                          "shard restarts", self.shard_id)
            raise
        finally:
            for remote in self._remotes.values():
                remote.metadata.close()
            self._remotes.clear()

    def _serve(self, job: _Job) -> None:
        """Open the partition's metadata, clean up, upload, apply total retention;
        post each change, then the outcome."""
        error = None
        try:
            remote = self._remote_for(job)
            if remote is None:
                return   # its partition was deleted: nothing to post
            if job.resync_request:   # another shard uploaded since the last listing
                remote.synced = False
            if not remote.synced:
                self._sync(job, remote)
                if job.resync_request:   # after the view's post: the controller's next ask sees it
                    self._nudge(_Nudge(job.key, "re-synced"))
            if not remote.clean:
                self._check_claim()   # another copy's upload may be what is unfinished
                clean_up_unfinished(self._store, remote.metadata)
                remote.clean = True
            uploaded_bytes = 0
            if job.segment is not None and _beyond(remote.metadata, job.segment):
                uploaded_bytes = upload_segment(self._store, remote.metadata,
                                                job.segment).size_bytes
                self._publish(job, remote, uploaded=True)
            elif job.segment is not None:   # already remote: the loop's view was behind
                self._publish(job, remote, uploaded=False)
            self._apply_retention(job, remote, uploaded_bytes)
        except (BrokerError, OSError) as exc:   # store errors, the journal's, a vanished file
            error = f"{type(exc).__name__}: {exc}"
            remote = self._remotes.get(job.key)
            if remote is not None:
                remote.clean = False
        finally:
            with self._forgotten_lock:
                self._forgotten.discard(job.epoch)
        self._post(self._finished, job.key, job.epoch, error)

    def _refresh(self, job: _Refresh) -> None:
        """List a followed partition's manifests (reading only new ones); post the view."""
        try:
            segments, corrupt = refresh_remote_segments(
                self._store, job.key[0], job.topic_id, job.key[1],
                {segment.segment_id: segment for segment in job.known})
        except (BrokerError, OSError) as exc:
            self._post(self._refreshed, job.key, job.epoch, None, f"{type(exc).__name__}: {exc}")
            return
        for problem in corrupt[:limits.REMOTE_CORRUPT_MANIFESTS_LOGGED_MAX]:
            log.error("%s: %s-%d: skipped a manifest that is not one: %s", self.shard_id,
                      job.key[0], job.key[1], problem)
        self._post(self._refreshed, job.key, job.epoch, RemoteLogView.of(segments), None)

    def _nudge(self, nudge: _Nudge) -> None:
        """Tell the controller that tiering changed here (uploader thread; a Ray call
        that does not wait). A failure is logged: the controller polls anyway."""
        if self._controller is None:
            return
        try:
            self._controller.tiering_changed(self.shard_id)
        except Exception as exc:   # the controller is restarting or gone; it polls at start
            log.warning("%s: could not tell the controller that %s-%d is %s: %s: %s",
                        self.shard_id, nudge.key[0], nudge.key[1], nudge.why,
                        type(exc).__name__, exc)

    def _post(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the loop thread (uploader thread). A loop whose command
        queue stays full loses the result: logged (the partition stays in flight)."""
        try:
            self._post_fn(fn, *args)
        except queue.Full:
            log.error("%s: the loop's command queue is full; the uploader's %s for %s is "
                      "lost", self.shard_id, fn.__name__, args[0])

    def _remote_for(self, job: _Job) -> _Remote | None:
        """The partition's metadata, opened (its view published) if it is not open yet;
        None if the partition was deleted since the job was queued."""
        remote = self._remotes.get(job.key)
        if remote is not None and remote.epoch != job.epoch:   # the topic was recreated
            remote.metadata.close()
            del self._remotes[job.key]
            remote = None
        if remote is not None:
            return remote
        # Under the lock ``forget`` takes: opening creates the directory, which the loop
        # may be about to delete (the open is a local read, never a store call).
        with self._forgotten_lock:
            if job.epoch in self._forgotten:
                return None
            metadata, _ = RemoteLogMetadata.open(job.directory)
        remote = self._remotes[job.key] = _Remote(job.epoch, metadata)
        self._publish(job, remote, uploaded=False)   # the journal's view, for reads
        return remote

    def _sync(self, job: _Job, remote: _Remote) -> None:
        """Adopt what the store lists and the journal lacks, forget what it no longer
        lists (remote_transfer.sync_with_store), then publish: from here on the loop
        uploads past the store's remote end, never again what another leader did.
        A segment forgotten that retention here would not delete was lost by the
        store (``_say_lost``)."""
        due = {segment.segment_id for segment in remote.metadata.segments_past_retention(
            now_ms=wall_clock_ms(), retention_ms=job.retention_ms,
            retention_bytes=job.retention_bytes, local_only_bytes=job.local_only_bytes,
            log_start_floor=job.log_start_floor)}
        found = sync_with_store(self._store, remote.metadata, job.key[0], job.topic_id,
                                job.key[1])
        self._say_lost(job, [s for s in found.dropped if s.segment_id not in due])
        for problem in found.corrupt[:limits.REMOTE_CORRUPT_MANIFESTS_LOGGED_MAX]:
            log.error("%s: %s-%d: skipped a manifest that is not one (its range may be "
                      "uploaded again; its objects stay): %s", self.shard_id, job.key[0],
                      job.key[1], problem)
        if found.adopted or found.dropped:
            log.info("%s: %s-%d: adopted %d remote segments from the store (%s) and forgot "
                     "%d it no longer holds", self.shard_id, job.key[0], job.key[1],
                     len(found.adopted), _offsets(found.adopted), len(found.dropped))
        remote.synced = True
        self._publish(job, remote, uploaded=False, listed_request=job.resync_request,
                      gone=tuple(segment.segment_id for segment in found.dropped),
                      gone_why="the store no longer lists (retention by another shard)")

    def _say_lost(self, job: _Job, lost: list) -> None:
        """An ERROR for segments the journal recorded as uploaded and the store no longer
        holds, which this partition's retention would not have deleted (another
        shard's retention deletes only what is due: due here too, as time and the log
        only grow): deleted out of band, or the store lost them (a bucket emptied, a
        store restored from an older state). Their records can no longer be read;
        before, the log start moved past them with an INFO line (tester T-tier,
        session 42). Counted in ``stats`` (``remote_segments_lost``). Uploader thread."""
        if not lost:
            return
        self._segments_lost[job.key] = self._segments_lost.get(job.key, 0) + len(lost)
        log.error("%s: %s-%d: %d remote segments the journal recorded as uploaded are gone "
                  "from %s, and its retention (retention.ms %d, retention.bytes %d) would "
                  "not have deleted them (%s): deleted out of band, or lost by the store "
                  "(a bucket emptied, restored from an older state). Their records can no "
                  "longer be read; the log now starts after them", self.shard_id,
                  job.key[0], job.key[1], len(lost), redacted_url(self._url),
                  job.retention_ms, job.retention_bytes, _offsets(lost))

    def _publish(self, job: _Job, remote: _Remote, *, uploaded: bool, listed_request: int = 0,
                 gone: tuple[str, ...] = (), gone_why: str = "") -> None:
        view = remote.metadata.view()
        self._post(self._published, job.key, job.epoch, view, uploaded, None, remote.synced,
                   listed_request, gone, gone_why)

    def _apply_retention(self, job: _Job, remote: _Remote, uploaded_bytes: int) -> None:
        """Total retention (retention.ms/.bytes over local plus remote) on the remote log,
        and the segments wholly below the floor deleteRecords raised;
        ``uploaded_bytes`` (just uploaded) count as remote, no longer as local only."""
        metadata = remote.metadata
        local_only_bytes = max(0, job.local_only_bytes - uploaded_bytes)
        doomed = metadata.segments_past_retention(
            now_ms=wall_clock_ms(), retention_ms=job.retention_ms,
            retention_bytes=job.retention_bytes, local_only_bytes=local_only_bytes,
            log_start_floor=job.log_start_floor)
        if not doomed:
            return
        self._check_claim()
        why = ("deleted below the log start floor of deleteRecords"
               if doomed[-1].end_offset <= job.log_start_floor else "deleted by total retention")
        # The loop stops reading them before their objects go (a read that took the
        # older view may still find one gone: RemoteObjectNotFoundError).
        # Their cached chunks go with that view: a read queued before it is served
        # before they are dropped (remote_fetcher.py), none queued after asks for them.
        doomed_ids = {segment.segment_id for segment in doomed}
        self._post(self._published, job.key, job.epoch, RemoteLogView.of(
            s for s in metadata.finished_segments() if s.segment_id not in doomed_ids),
            False, doomed[-1].end_offset, remote.synced, 0,
            tuple(segment.segment_id for segment in doomed), why)
        for segment in doomed:
            delete_segment(self._store, metadata, segment)
        log.info("%s: %d remote segments of %s-%d up to offset %d %s", self.shard_id,
                 len(doomed), job.key[0], job.key[1], doomed[-1].end_offset, why)
        self._publish(job, remote, uploaded=False)

    # --- Topic deletions (uploader thread) ----------------------------------------------

    def _check_claim(self) -> None:
        """Before deleting anything in the store: TierStoreNotOwnedError (retried with
        the backoff, as an outage) unless the store's claim names this server's start,
        so a copy of the data dir never deletes its original's objects
        (store_claim.py)."""
        if self._fence is not None:
            self._fence.check()

    def _load_deletions(self) -> None:
        """Find the pending deletions on disk (at start, and when the loop adds one).
        Another store's are left on disk, not run (module docstring)."""
        try:
            entries = sorted(self.deletions_dir.iterdir())
        except FileNotFoundError:
            return
        own_store = store_identity(self._url)
        for directory in entries[:limits.REMOTE_DELETIONS_PENDING_MAX]:
            if directory in self._deletions or directory in self._foreign:
                continue
            try:
                deletion = _Deletion.read(directory)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("%s: cannot read the pending deletion %s: %s: %s", self.shard_id,
                          directory / DELETION_FILE, type(exc).__name__, exc)
                continue
            if not deletion.runs_in(own_store):
                self._foreign.add(directory)
                log.error("%s: the pending deletion of %s-%d's remote segments is for %s, not "
                          "this shard's store %s: it is left in %s until the server is "
                          "started with that store", self.shard_id, deletion.topic,
                          deletion.partition, deletion.store, own_store, directory)
                continue
            self._deletions[directory] = deletion
            self._close_remote((deletion.topic, deletion.partition))

    def _close_remote(self, key: tuple[str, int]) -> None:
        """Drop the uploader's handle of a deleted partition (its journal moved away,
        or went with a dropped copy's directory)."""
        remote = self._remotes.pop(key, None)
        if remote is not None:
            remote.metadata.close()

    def _deletion_wait_s(self) -> float | None:
        if not self._deletions:
            return None
        now_s = time.monotonic()
        return max(0.0, min(d.retry_at_s for d in self._deletions.values()) - now_s)

    def _run_deletions(self) -> None:
        now_s = time.monotonic()
        for deletion in list(self._deletions.values()):
            if deletion.retry_at_s > now_s or self._stopping:
                continue
            try:
                self._delete_remote(deletion)
            except (BrokerError, OSError) as exc:
                if not deletion.backoff_ms:
                    log.warning("%s: deleting the remote segments of deleted %s-%d failed, "
                                "retrying with backoff: %s: %s", self.shard_id, deletion.topic,
                                deletion.partition, type(exc).__name__, exc)
                deletion.backoff_ms = min(max(2 * deletion.backoff_ms,
                                              limits.REMOTE_UPLOAD_BACKOFF_MS_MIN),
                                          limits.REMOTE_UPLOAD_BACKOFF_MS_MAX)
                deletion.retry_at_s = now_s + deletion.backoff_ms / 1000
                continue
            del self._deletions[deletion.directory]

    def _delete_remote(self, deletion: _Deletion) -> None:
        """Every segment of a deleted partition this shard knows of or the store lists
        under its topic id, each journaled, then every other object under that
        prefix (another shard's half-done uploads, a corrupt manifest); then the
        pending directory. The listing is of the deleted topic's id only: a topic
        created again under its name has another, so nothing of it is ever listed
        here (and every upload a late leader of the deleted one made is)."""
        self._check_claim()
        metadata, _ = RemoteLogMetadata.open(deletion.directory)
        listed = []
        try:
            clean_up_unfinished(self._store, metadata)
            for segment in metadata.finished_segments():
                delete_segment(self._store, metadata, segment)
            if deletion.topic_id:
                listed, _ = refresh_remote_segments(self._store, deletion.topic,
                                                    deletion.topic_id, deletion.partition, {})
            for segment in listed:
                _delete_untracked(self._store, metadata, segment)
            if deletion.topic_id:
                for info in self._store.list(partition_prefix(
                        deletion.topic, deletion.topic_id, deletion.partition)):
                    self._store.delete(info.key)
        finally:
            metadata.close()
        shutil.rmtree(deletion.directory)
        fsync_directory(self.deletions_dir)
        log.info("%s: the remote segments of deleted %s-%d are gone (%d listed)",
                 self.shard_id, deletion.topic, deletion.partition, len(listed))


def stranded_deletions(data_dir: Path, store: str | None) -> dict:
    """The pending topic deletions in shard directory ``data_dir`` that a shard tiering
    to ``store`` (store_identity; None: no --tier-url) cannot run (module docstring),
    for its stats (STRANDED_DELETIONS_STAT): ``{"directory": the deletions'
    directory, "stores": {the store's identity ("" if not recorded): {"count": n,
    "partitions": the first _STRANDED_NAMED_MAX as "topic-partition"}}}``; {} if
    none. One that cannot be read is left out (an uploader logs it). Any thread."""
    try:
        entries = sorted((Path(data_dir) / DELETIONS_DIR).iterdir())
    except FileNotFoundError:
        return {}
    stores: dict[str, dict] = {}
    for directory in entries[:limits.REMOTE_DELETIONS_PENDING_MAX]:
        try:
            deletion = _Deletion.read(directory)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if deletion.runs_in(store):
            continue
        found = stores.setdefault(deletion.store or "", {"count": 0, "partitions": []})
        found["count"] += 1
        if len(found["partitions"]) < _STRANDED_NAMED_MAX:
            found["partitions"].append(f"{deletion.topic}-{deletion.partition}")
    if not stores:
        return {}
    return {"directory": str(Path(data_dir) / DELETIONS_DIR), "stores": stores}


def _delete_untracked(store: RemoteStore, metadata: RemoteLogMetadata,
                      segment: RemoteSegment) -> None:
    """Delete a listed segment the journal does not track (another leader's upload),
    journaled as a copy started and deleted, so a crash midway finishes it."""
    if metadata.state_of(segment.segment_id) is None:
        metadata.copy_started(segment, wall_clock_ms())
    delete_segment(store, metadata, segment)


def _offsets(segments: list[RemoteSegment]) -> str:
    """For log lines: the range the segments cover, e.g. "offsets 0 to 5210"."""
    if not segments:
        return "none"
    return (f"offsets {min(s.base_offset for s in segments)} to "
            f"{max(s.end_offset for s in segments)}")


def _beyond(metadata: RemoteLogMetadata, local: LocalSegment) -> bool:
    """Whether ``local`` is not in object storage yet (a retried job may be stale): as
    the loop judges it (tier_policy.held_remotely), by coverage, not by the remote end."""
    return not metadata.view().covers(local.base_offset, local.end_offset)


def _producers_after(part: Partition, segment: Segment) -> bytes | None:
    """The producer-state snapshot holding just after ``segment``'s last entry: the one
    saved when the log rolled to the next segment (producer_state.py), as its file's
    layout; None if there is none (a log written before per-roll snapshots, or a
    roll whose snapshot the disk refused)."""
    producers = load_snapshot(part.log.directory, segment.end_offset)
    if producers is None:
        return None
    return json.dumps({"base_offset": segment.end_offset, "producers": producers}).encode()


def _parse_partition_dir(name: str) -> tuple[str, int]:
    """("topic", 3) from a partition directory's name "topic-3" (shard_server.py)."""
    topic, _, partition = name.rpartition("-")
    return topic, int(partition)
