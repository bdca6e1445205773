"""A consumer's membership in a group: the heartbeat thread.

Client side. The heartbeat thread owns its own Connection and sends a
GroupHeartbeat every ``heartbeat_interval_ms`` (the coordinator says how
often; until it has, ``GROUP_HEARTBEATS_PER_SESSION`` per session timeout),
carrying the subscription and the partitions the consumer owns. The
consumer's thread never waits for it: it takes the latest target assignment
with ``take_target()`` inside ``poll()``, applies it (revoking first), and
reports what it now owns with ``set_owned()``, which sends a heartbeat at once
so that a revoked partition reaches its next owner quickly. Until it has, a
heartbeat reports as owned the target being applied and the one not yet
taken too: the coordinator frees a partition when a report leaves it out, and
the consumer may still be adding it (on_assign) while the heartbeat travels.

If the coordinator says the member is unknown or fenced, or no heartbeat
succeeds for a whole session timeout, the membership is lost: the target
becomes empty and its partitions are lost, not revoked (other members may own
them already): the consumer drops them and their buffered records, commits
their positions only without a membership and ahead of the group's commits
(consumer_base.py, ``_lost_positions``), calls on_revoke, and the thread
rejoins as a new member as soon as it has dropped them. Before it hands out
records the consumer asks ``records_allowed()``: not while lost partitions
are not dropped yet, nor while no heartbeat sent within the last session
timeout was answered (the consumer's loop was blocked, or the coordinator is
silent: the session may have ended and the partitions moved), which sends
one at once to learn it. A heartbeat that fails otherwise (the coordinator
is moving: unavailable, notLeader, a timeout) is retried after a backoff from
``CLIENT_RETRY_BACKOFF_MS``, doubling up to the heartbeat interval, not after
a whole interval: after a coordinator's failover the member finds the new one
(and learns it must rejoin there) within a backoff of its election, as Kafka's
clients look up a new coordinator at once. The consumer also calls
``heartbeat_now()`` when a commit is refused because the member is unknown,
so that it need not wait for the next heartbeat to learn it; a heartbeat of
the member then waiting for its answer is given up for a new one: after a
coordinator's restart (membership is soft state) that answer never comes, and
waiting for it (request_timeout_ms, up to the session timeout) kept the member
from rejoining while every commit was refused. The new heartbeat is refused as
an unknown member's too, and the member rejoins as above: at the first refusal,
as Kafka's consumer does. ``close()``
sends a last heartbeat with the leave epoch, so the member's partitions move
at once instead of after its session timeout.

The heartbeat also leaves the group when the application has not polled for
``max_poll_interval_ms`` (Kafka's max.poll.interval.ms, KIP-62): a consumer
whose processing is stuck keeps heartbeating, and without this would keep its
partitions, read by no one, for as long as it is stuck. Each pass of the
consumer's poll loop calls ``note_poll()``; the heartbeat wakes when the
interval runs out, sends the leave heartbeat and loses the membership as a
fenced member does (its partitions are lost, not revoked). Until the next poll
it sends no heartbeat, and a commit raises CommitFailedError
(``raise_if_left_unpolled``); that poll drops the lost partitions and the
heartbeat rejoins as a new member.
"""

from __future__ import annotations

import logging
import threading
import time

from plinth import limits, protocol
from plinth.client.connection import Connection
from plinth.errors import (BrokerError, CommitFailedError, InconsistentGroupProtocolError,
                           InvalidConfigError, InvalidGroupError, NotAuthorizedError,
                           PlinthTimeoutError, StaleMemberEpochError, UnknownMemberIdError)

log = logging.getLogger(__name__)
# Answers no heartbeat can change: the membership ends and poll() raises them.
# invalidConfig: the coordinator refuses the member's session timeout or assignor,
# which this member sends unchanged in every heartbeat. notAuthorized: the client's
# key has no grant on the group (Kafka's GROUP_AUTHORIZATION_FAILED, which its
# consumers raise from poll too); retried, poll returned nothing for ever.
_REFUSALS = (InconsistentGroupProtocolError, InvalidGroupError, InvalidConfigError,
             NotAuthorizedError)

TopicPartition = tuple[str, int]
# The member epoch of a leave heartbeat (as the coordinator's, shards/group_coordinator.py).


class GroupMembership:
    def __init__(self, broker: str, group: str, topics: list[str], *, session_timeout_ms: int,
                 assignor: str, request_timeout_ms: float,
                 max_poll_interval_ms: int = limits.MAX_POLL_INTERVAL_MS_DEFAULT):
        self._init_state(group, topics, session_timeout_ms, assignor, request_timeout_ms,
                         max_poll_interval_ms)
        self._wake = threading.Event()
        self._conn = Connection(broker)
        self._thread = threading.Thread(target=self._run, name=f"plinth-heartbeat-{group}",
                                        daemon=True)

    def _init_state(self, group: str, topics: list[str], session_timeout_ms: int, assignor: str,
                    request_timeout_ms: float, max_poll_interval_ms: int) -> None:
        """The membership's state, whichever driver heartbeats (this thread, or the
        asyncio consumer's task: client/aio/group_membership.py)."""
        self.group = group
        self.topics = list(topics)
        self.session_timeout_ms = session_timeout_ms
        self.assignor = assignor
        self.request_timeout_ms = min(request_timeout_ms, session_timeout_ms)
        self.member_id = ""
        self.member_epoch = 0
        self._interval_s = session_timeout_ms / 1000 / limits.GROUP_HEARTBEATS_PER_SESSION
        self._lock = threading.Lock()       # guards owned, target, member id/epoch
        self._owned: set[TopicPartition] = set()
        self._target: set[TopicPartition] | None = None
        self._taken: set[TopicPartition] = set()   # the target being applied, till set_owned
        self._closing = False
        # When the last heartbeat answered was sent: the coordinator's session started no
        # earlier (the answer's arrival would be later than its start).
        self._last_ok_s = time.monotonic()
        self._sent_s = self._last_ok_s                # when the heartbeat in flight was sent
        # When the heartbeat in flight was sent, None while none is (between heartbeats):
        # heartbeat_unanswered_ms.
        self._unanswered_since_s: float | None = None
        self._closing_since_s = 0.0   # when close() began (a join's give-up counts from it)
        self._lost = False            # lost partitions the consumer has not taken yet
        self.target_lost = False      # the target last taken leaves out lost partitions
        self._retry_backoff_s: float | None = None   # set while heartbeats fail
        # A refused commit asked for a heartbeat now (heartbeat_now): the member's
        # heartbeat in flight, if any, is given up for it. Cleared as one is sent.
        self._asked_again = False
        # The error the last heartbeat failed with, while they fail; None once one is
        # answered (heartbeat_error).
        self._heartbeat_error: Exception | None = None
        # An answer no retry can change (the group is a Kafka client's), or an error no
        # heartbeat expects (a bug): the heartbeat thread stops, and the consumer raises
        # it from its next poll rather than poll without a membership for ever.
        self._fatal: BaseException | None = None
        self.max_poll_interval_ms = max_poll_interval_ms
        self._last_poll_s = time.monotonic()   # when the consumer last polled (note_poll)
        # How long the consumer had not polled when the heartbeat left the group for
        # it (ms); None once it polls again, or if it never left so.
        self._left_unpolled_ms: float | None = None

    def start(self) -> None:
        self._thread.start()

    # --- Consumer thread ----------------------------------------------------------

    def take_target(self) -> set[TopicPartition] | None:
        """The newest assignment if it differs from what is owned, else None;
        ``target_lost`` then says whether every partition owned was lost with the
        membership (consumer thread)."""
        with self._lock:
            lost, self._lost = self._lost, False
            if self._target is None or (self._target == self._owned and not lost):
                return None
            self._taken = set(self._target)
            self.target_lost = lost
            return set(self._target)

    def records_allowed(self) -> bool:
        """Whether the consumer may hand out records now (consumer thread): not while
        lost partitions wait to be dropped, nor while the session may have ended (no
        heartbeat sent in the last session timeout was answered), when it wakes the
        heartbeat to learn whether it did. Kafka's consumer checks the same before it
        hands out records: another member may be reading them already."""
        with self._lock:
            if self._lost:
                return False
            if not self.member_id or \
                    time.monotonic() - self._last_ok_s < self.session_timeout_ms / 1000:
                return True
        self._wake.set()   # a heartbeat in flight is waited for: this runs every poll slice
        return False

    def set_owned(self, owned: set[TopicPartition]) -> None:
        """What the consumer owns, once it has applied the target it took (consumer
        thread)."""
        with self._lock:
            self._owned = set(owned)
            self._taken = set()
        self._wake.set()

    def note_poll(self) -> None:
        """The application polls (each pass of the consumer's poll loop; consumer
        thread): max_poll_interval_ms counts from now. After a leave for want of a
        poll, wake the heartbeat to rejoin (once the lost partitions are dropped)."""
        with self._lock:
            self._last_poll_s = time.monotonic()
            rejoin, self._left_unpolled_ms = self._left_unpolled_ms is not None, None
        if rejoin:
            self._wake.set()

    def raise_if_left_unpolled(self) -> None:
        """CommitFailedError if the heartbeat left the group because the consumer had
        not polled within max_poll_interval_ms, and it has not polled since (consumer
        thread): the member is gone, its partitions may be another's."""
        with self._lock:
            left_ms = self._left_unpolled_ms
        if left_ms is not None:
            raise CommitFailedError(
                f"group {self.group}: cannot commit: this consumer left the group after "
                f"{left_ms:.0f} ms without a poll(), over max_poll_interval_ms="
                f"{self.max_poll_interval_ms}, and its partitions may be another member's "
                f"now; its next poll() rejoins. Poll more often, take fewer records per "
                f"poll (max_poll_records), or raise max_poll_interval_ms")

    def identity(self) -> tuple[str, int]:
        with self._lock:
            return self.member_id, self.member_epoch

    def heartbeat_error(self) -> Exception | None:
        """The error the heartbeats are failing with now (the coordinator unreachable, or
        not answering within request_timeout_ms), retried; None once one is answered.
        Any thread: one attribute read."""
        return self._heartbeat_error

    def heartbeat_unanswered_ms(self) -> float | None:
        """How long the heartbeat in flight has gone unanswered (ms); None while none is
        in flight. A coordinator answers a heartbeat at once: one unanswered for long
        (a hung coordinator) is failing before its timeout says so (heartbeat_error).
        Any thread: one attribute read."""
        sent_s = self._unanswered_since_s
        return None if sent_s is None else (time.monotonic() - sent_s) * 1000

    def raise_if_refused(self) -> None:
        """Raise the error that ended this membership for good, if one did (consumer
        thread): the group's coordinator refuses this consumer whatever it retries."""
        if self._fatal is not None:
            raise self._fatal

    def heartbeat_now(self) -> None:
        """Send a heartbeat now instead of at the next interval (any thread): the
        coordinator refused a commit of this member as unknown, or a fetch found a
        topic deleted (the answer takes its partitions away). A heartbeat of the
        member waiting for its answer is given up for it (that answer may never come:
        see the module); a join in flight is not (the member it makes would be left
        in the group, assigned partitions, for a session timeout)."""
        self._asked_again = True
        self._wake.set()

    def close(self) -> None:
        """Leave the group (its partitions move at once) and stop the thread: a member's
        heartbeat in flight is given up at once (the leave that follows says what it
        would have), a join in flight after GROUP_LEAVE_TIMEOUT_MS_MAX (its answer makes
        the member that must leave: see ``_give_up_for``); the leave heartbeat is waited
        for at most that too. A hung coordinator held close() for the heartbeat's whole
        request timeout."""
        self._closing_since_s = time.monotonic()
        self._closing = True
        self._wake.set()
        self._thread.join((self.request_timeout_ms + limits.GROUP_LEAVE_TIMEOUT_MS_MAX) / 1000)
        self._conn.close()

    # --- Heartbeat thread -----------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            try:
                leave = self._leave_if_unpolled()
                if leave is not None:
                    self._send_leave(leave)
                self._heartbeat_once()
            except Exception as exc:
                self._heartbeat_crashed(exc)
                return
            self._wake.wait(self._next_wait_s())
            self._wake.clear()
        self._leave()

    def _next_wait_s(self) -> float:
        """The interval; a backoff (doubling up to it) while heartbeats fail; nothing
        once the membership is lost and the consumer has dropped its partitions
        (rejoin at once; until it has, ``set_owned`` wakes the thread when it has:
        a new member never claims partitions the lost one owned)."""
        with self._lock:
            if self._left_unpolled_ms is not None:   # note_poll wakes it to rejoin
                return self._interval_s
            rejoin = not self.member_id and not self._holds_lost_locked()
            poll_due_s = self._last_poll_s + self.max_poll_interval_ms / 1000 - time.monotonic()
        if rejoin:
            return 0.0 if self._retry_backoff_s is None else self._retry_backoff_s
        wait_s = self._interval_s if self._retry_backoff_s is None else \
            min(self._retry_backoff_s, self._interval_s)
        return min(wait_s, max(poll_due_s, 0.0))   # wake to leave when no poll came

    def _failed(self) -> None:
        """A heartbeat failed: the next one after the backoff, doubled for the one after."""
        if self._retry_backoff_s is None:
            self._retry_backoff_s = limits.CLIENT_RETRY_BACKOFF_MS / 1000
        else:
            self._retry_backoff_s = min(2 * self._retry_backoff_s, self._interval_s)

    def _heartbeat_once(self) -> None:
        request = self._heartbeat_request()
        if request is None:
            return
        request_id, header = request
        try:
            got = self._conn.request(header, request_id, self.request_timeout_ms,
                                     give_up=self._give_up_for())
        except (BrokerError, PlinthTimeoutError) as exc:
            self._heartbeat_failed(exc)
            return
        if got is not None:   # None: given up for the heartbeat a refused commit asks for
            self._heartbeat_answered(got[0])

    # The heartbeat's request and what its outcome means, apart from how it is sent
    # (sans-IO: the asyncio consumer's task sends the same requests).

    def _heartbeat_request(self) -> tuple[int, bytes] | None:
        """(request id, header) of the next heartbeat; None while the membership is
        lost and the consumer still owns (or applies) partitions of it: a new member
        never claims them before they are dropped. (A wake, say from a refused commit,
        used to rejoin at once; the consumer then read on as the new member without
        dropping what the old one owned.)"""
        with self._lock:
            if self._left_unpolled_ms is not None:   # no rejoin before the next poll
                return None
            if not self.member_id and self._holds_lost_locked():
                return None
            # What the consumer owns or may take before this heartbeat's answer: a report
            # without a partition lets the coordinator give it to another member.
            owned = self._owned | self._taken | (self._target or set())
            member_id, epoch = self.member_id, self.member_epoch
            self._asked_again = False
        request_id = self._conn.next_request_id()
        self._sent_s = self._unanswered_since_s = time.monotonic()
        return request_id, protocol.encode_group_heartbeat(
            request_id, self.group, member_id, epoch, self.topics, owned,
            self.session_timeout_ms, self.assignor)

    def _give_up_for(self):
        """What the wait for the heartbeat just sent asks whether to give it up: a
        member's, whether a refused commit asked for a new one since (``heartbeat_now``)
        or the membership is closing; a join's, whether the membership has been
        closing for GROUP_LEAVE_TIMEOUT_MS_MAX (until then its answer may come, and with
        it the member id the leave needs: a join given up at once could leave a member
        holding partitions for a session timeout). The heartbeat's thread or task (it
        alone changes the member id)."""
        if self.member_id:
            return lambda: self._asked_again or self._closing
        bound_s = limits.GROUP_LEAVE_TIMEOUT_MS_MAX / 1000
        return lambda: (self._closing
                        and time.monotonic() - self._closing_since_s >= bound_s)

    def _holds_lost_locked(self) -> bool:
        """Whether the consumer may still hold partitions (owned, being applied, or
        lost and not yet taken): after a lost membership, no rejoin until it drops
        them. Called with the lock held."""
        return bool(self._owned or self._taken or self._lost)

    def _heartbeat_failed(self, exc: BrokerError | PlinthTimeoutError) -> None:
        self._unanswered_since_s = None
        if isinstance(exc, (UnknownMemberIdError, StaleMemberEpochError)):
            log.warning("group %s: %s", self.group, exc)
            self._lose_membership()
            self._retry_backoff_s = None   # the coordinator answered: rejoin at once
        elif isinstance(exc, _REFUSALS):
            # Info, not error: the consumer's next poll raises it, and whoever polls
            # tells it (the CLI's "error:" line); an error log printed it twice.
            log.info("group %s: %s", self.group, exc)
            self._fatal, self._closing = exc, True
        else:
            # While closing, the consumer's owner has stopped listening (the CLI has
            # printed its last line): a warning then is noise after it.
            log.log(logging.DEBUG if self._closing else logging.WARNING,
                    "group %s: heartbeat failed: %s", self.group, exc)
            self._heartbeat_error = exc
            if time.monotonic() - self._last_ok_s > self.session_timeout_ms / 1000:
                self._lose_membership()
            self._failed()

    def _heartbeat_crashed(self, exc: Exception) -> None:
        """A heartbeat raised what no heartbeat expects: end the membership and let the
        consumer's next poll raise it (a thread that died silently would leave the
        consumer polling nothing for ever)."""
        log.exception("group %s: heartbeat failed unexpectedly; the membership ends",
                      self.group)
        self._fatal, self._closing = exc, True

    def _heartbeat_answered(self, view) -> None:
        self._unanswered_since_s = None
        self._last_ok_s = self._sent_s
        self._retry_backoff_s = None
        self._heartbeat_error = None
        result = view.heartbeat
        with self._lock:
            self.member_id, self.member_epoch = result.member_id, result.member_epoch
            self._target = result.assignment
        self._interval_s = result.heartbeat_interval_ms / 1000

    def _lose_membership(self) -> None:
        with self._lock:
            self.member_id, self.member_epoch = "", 0
            self._target = set()
            self._lost = bool(self._owned | self._taken)

    def _leave_if_unpolled(self) -> tuple[bytes, int, float] | None:
        """The leave heartbeat's request, if the consumer has not polled for
        max_poll_interval_ms: the membership is lost as a fenced member's (its
        partitions are lost, not revoked: another member may read them before the
        consumer polls), and the next poll rejoins. None otherwise."""
        with self._lock:
            unpolled_ms = (time.monotonic() - self._last_poll_s) * 1000
            if not self.member_id or self._left_unpolled_ms is not None or \
                    unpolled_ms < self.max_poll_interval_ms:
                return None
            self._left_unpolled_ms = unpolled_ms
        leave = self._leave_request()
        log.warning("group %s: member %s leaves the group: the application has not called "
                    "poll() for %.0f ms, over max_poll_interval_ms=%d; its partitions move to "
                    "other members, and its next poll() rejoins (poll more often, take fewer "
                    "records per poll with max_poll_records, or raise max_poll_interval_ms)",
                    self.group, self.member_id, unpolled_ms, self.max_poll_interval_ms)
        self._lose_membership()
        return leave

    def _leave(self) -> None:
        leave = self._leave_request()
        if leave is not None:
            self._send_leave(leave)

    def _send_leave(self, leave: tuple[bytes, int, float]) -> None:
        try:
            self._conn.request(*leave)
        except (BrokerError, PlinthTimeoutError) as exc:
            self._leave_failed(exc)

    def _leave_request(self) -> tuple[bytes, int, float] | None:
        """(header, request id, timeout_ms) of the leave heartbeat; None if not a member."""
        member_id, _ = self.identity()
        if not member_id:
            return None
        request_id = self._conn.next_request_id()
        header = protocol.encode_group_heartbeat(
            request_id, self.group, member_id, protocol.LEAVE_EPOCH, self.topics, set(),
            self.session_timeout_ms, self.assignor)
        return header, request_id, min(self.request_timeout_ms, limits.GROUP_LEAVE_TIMEOUT_MS_MAX)

    def _leave_failed(self, exc: Exception) -> None:
        log.warning("group %s: leave failed (the session timeout will remove it): %s",
                    self.group, exc)
